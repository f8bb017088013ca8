package notify

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"strings"
	"sync"
)

// Home Assistant MQTT discovery (mqtt.home_assistant_discovery): before a
// series' first state is published, a retained config on
// <prefix>/binary_sensor/<object id>/config makes it a "problem"
// binary_sensor that reads the series' state topic, available while
// alertd's status topic says online. A removed rule's entities are
// removed by an empty retained config (Home Assistant's documented way).

// Discovery configures it; the zero value is off.
type Discovery struct {
	Prefix      string // "homeassistant"
	StatusTopic string // alertd's online/offline topic
	Node        string // this alertd, for the device entry (the host name)
}

type discovery struct {
	Discovery
	mu        sync.Mutex
	announced map[string]map[string]bool // rule → series announced
}

func (nf *Notifier) announce(rule, series, stateTopic string) {
	d := nf.discovery
	if d == nil || nf.Publish == nil {
		return
	}
	d.mu.Lock()
	if d.announced[rule][series] {
		d.mu.Unlock()
		return
	}
	if d.announced[rule] == nil {
		d.announced[rule] = map[string]bool{}
	}
	d.announced[rule][series] = true
	d.mu.Unlock()
	id := objectID(rule, series)
	node := d.Node
	if node == "" {
		node = "alertd"
	}
	cfg := map[string]any{
		"name":                  rule + " " + series,
		"unique_id":             id,
		"object_id":             id,
		"state_topic":           stateTopic,
		"value_template":        "{{ 'ON' if value_json.state == 'firing' else 'OFF' }}",
		"json_attributes_topic": stateTopic,
		"device_class":          "problem",
		"availability_topic":    d.StatusTopic,
		"payload_available":     "online",
		"payload_not_available": "offline",
		"device": map[string]any{
			"identifiers": []string{"alertd_" + sanitize(node)}, "name": "alertd on " + node, "manufacturer": "alertd", "model": "alertd",
		},
		"origin": map[string]any{"name": "alertd"},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return
	}
	nf.Publish(d.configTopic(rule, series), b)
}

func (d *discovery) configTopic(rule, series string) string {
	return d.Prefix + "/binary_sensor/" + objectID(rule, series) + "/config"
}

// ForgetRules removes the Home Assistant entities of rules a reload
// removed, and their retained states.
func (nf *Notifier) ForgetRules(names []string) {
	d := nf.discovery
	if d == nil || nf.Publish == nil {
		return
	}
	for _, rule := range names {
		d.mu.Lock()
		series := d.announced[rule]
		delete(d.announced, rule)
		d.mu.Unlock()
		for s := range series {
			nf.Publish(d.configTopic(rule, s), []byte{})
			nf.Publish(nf.StateTopic+"/"+rule+"/"+s, []byte{})
		}
	}
}

// objectID is a Home Assistant object id for a series: the names made
// safe, cut short, and a hash of both so that two series never collide.
func objectID(rule, series string) string {
	h := fnv.New32a()
	h.Write([]byte(rule))
	h.Write([]byte{0})
	h.Write([]byte(series))
	base := sanitize(rule + "_" + series)
	if len(base) > 48 {
		base = base[:48]
	}
	return fmt.Sprintf("alertd_%s_%08x", base, h.Sum32())
}

func sanitize(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

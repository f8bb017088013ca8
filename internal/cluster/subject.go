package cluster

import (
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
)

// The conversions between MQTT topics and NATS subjects follow
// nats-server's server/mqtt.go (mqttToNATSSubjectConversion and
// natsSubjectToMQTTTopic), so a topic alertd gives back is the one the
// device published:
//   - '/' separates levels and becomes '.';
//   - an empty level (a leading, trailing or doubled '/') is kept as '/',
//     so "a//b" is "a./.b";
//   - '.' inside a level becomes "//";
//   - in a filter, '+' becomes '*' and '#' becomes '>'.

// errTopicWhitespace is the one topic nats-server refuses and so can never
// deliver.
var errTopicWhitespace = errors.New("whitespace in an MQTT topic")

// filterToSubject converts an MQTT topic filter to the NATS subject filter
// that captures what nats-server publishes for it.
func filterToSubject(filter string) (string, error) {
	if filter == "" {
		return "", errors.New("empty MQTT topic filter")
	}
	var b strings.Builder
	for i := 0; i < len(filter); i++ {
		ch := filter[i]
		switch ch {
		case '/':
			// The conversion tracks the output, as nats-server's does: a '/'
			// right after a '.' it wrote, or first, is an empty level.
			out := b.String()
			switch {
			case i == 0 || strings.HasSuffix(out, "."):
				b.WriteString("/.")
			case i == len(filter)-1 || filter[i+1] == '/':
				b.WriteString("./")
			default:
				b.WriteByte('.')
			}
		case ' ', '\t', '\n', '\r', '\f', 0x7f:
			return "", fmt.Errorf("filter %q: %w", filter, errTopicWhitespace)
		case '.':
			b.WriteString("//")
		case '+':
			b.WriteByte('*')
		case '#':
			b.WriteByte('>')
		default:
			b.WriteByte(ch)
		}
	}
	s := b.String()
	if strings.HasSuffix(s, ".") {
		s += "/"
	}
	return s, nil
}

// subjectToTopic is nats-server's natsSubjectToMQTTTopic: the MQTT topic a
// device published, given the NATS subject the server made of it.
func subjectToTopic(subject string) string {
	topic := make([]byte, 0, len(subject))
	for i := 0; i < len(subject); i++ {
		switch ch := subject[i]; ch {
		case '/':
			if i < len(subject)-1 {
				switch subject[i+1] {
				case '.':
					topic = append(topic, '/')
					i++
				case '/':
					topic = append(topic, '.')
					i++
				}
			}
		case '.':
			topic = append(topic, '/')
		default:
			topic = append(topic, ch)
		}
	}
	return string(topic)
}

// PartitionOf is the partition nats-server's `{{partition(n)}}` subject
// transform puts a subject in: FNV-1a 32 over the whole subject, modulo n
// (server/subject_transform.go, getHashPartition, with no token indexes
// the key is every token joined by '.'). It is what the stream does; alertd
// only computes it to report and test where a topic goes.
func PartitionOf(subject string, n int) int {
	if n <= 0 {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(subject))
	return int(h.Sum32() % uint32(n))
}

// names holds every JetStream name alertd derives from its prefix, so one
// place decides them.
type names struct {
	prefix string // subject prefix: "alertd"
	stream string // "alertd_ingest"
	bucket string // "alertd_cluster"
}

func newNames(prefix string) names {
	return names{
		prefix: prefix,
		stream: prefix + "_ingest",
		bucket: prefix + "_cluster",
	}
}

// outbox is the outbox stream's name, mailer its consumer's.
func (n names) outbox() string { return n.prefix + "_outbox" }
func (n names) mailer() string { return n.prefix + "_mailer" }

// ingestSubject is where partition p's readings are stored:
// "<prefix>.in.<p>.<the device's subject>".
func (n names) ingestSubject(p int) string {
	return n.prefix + ".in." + strconv.Itoa(p) + ".>"
}

// transformDest is the stream's subject transform: every captured subject,
// whole, hashed into one of parts partitions.
func (n names) transformDest(parts int) string {
	return n.prefix + ".in.{{partition(" + strconv.Itoa(parts) + ")}}.>"
}

// consumer is partition p's durable consumer name.
func (n names) consumer(p int) string {
	return fmt.Sprintf("%s_p%03d", n.prefix, p)
}

// splitStored takes a stored subject apart into its partition and the
// device's original subject.
func (n names) splitStored(stored string) (p int, subject string, err error) {
	rest, ok := strings.CutPrefix(stored, n.prefix+".in.")
	if !ok {
		return 0, "", fmt.Errorf("subject %q is not under %s.in", stored, n.prefix)
	}
	num, subject, ok := strings.Cut(rest, ".")
	if !ok {
		return 0, "", fmt.Errorf("subject %q has no partition token", stored)
	}
	p, err = strconv.Atoi(num)
	if err != nil {
		return 0, "", fmt.Errorf("subject %q: partition token: %w", stored, err)
	}
	return p, subject, nil
}

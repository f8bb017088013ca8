package httpin

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/alertd/alertd/internal/event"
)

// AlertmanagerPrefix starts the topic of every webhook alert:
// alertmanager/<alertname>.
const AlertmanagerPrefix = "alertmanager/"

// webhook is the part of Alertmanager's webhook_config payload (version
// "4"; Grafana's webhook contact point sends the same shape) that alertd
// reads. Each alert is passed on as Alertmanager wrote it: status,
// labels, annotations, startsAt, endsAt, generatorURL, fingerprint.
type webhook struct {
	Alerts []json.RawMessage `json:"alerts"`
}

type webhookAlert struct {
	Labels struct {
		Alertname *string `json:"alertname"`
	} `json:"labels"`
}

// alertmanager serves POST /v1/alertmanager. Every alert is checked
// before the first is committed; a failure part way answers 503, and
// Alertmanager's retry re-sends alerts already committed, which the
// rules take as the same reading again.
func (s *Server) alertmanager(w http.ResponseWriter, r *http.Request) (*accepted, error) {
	if kind, err := contentType(r); err != nil || kind != kindJSON {
		return nil, unsupported("application/json")
	}
	body, err := s.readBody(w, r)
	if err != nil {
		return nil, err
	}
	evs, err := s.webhookEvents(body)
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(evs))
	err = s.commit(r, func(ctx context.Context) error {
		for _, ev := range evs {
			id, err := s.sink.Event(ctx, ev)
			if err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &accepted{ID: ids[0], IDs: ids}, nil
}

func (s *Server) webhookEvents(body []byte) ([]*event.Event, error) {
	if err := checkJSON(body); err != nil {
		return nil, err
	}
	var hook webhook
	if err := json.Unmarshal(body, &hook); err != nil {
		return nil, badRequest("bad webhook: " + err.Error())
	}
	if len(hook.Alerts) == 0 {
		return nil, badRequest("bad webhook: no alerts")
	}
	now := s.now()
	evs := make([]*event.Event, 0, len(hook.Alerts))
	for _, raw := range hook.Alerts {
		var a webhookAlert
		if err := json.Unmarshal(raw, &a); err != nil {
			return nil, badRequest("bad webhook alert: " + err.Error())
		}
		if a.Labels.Alertname == nil || *a.Labels.Alertname == "" {
			return nil, badRequest("bad webhook alert: no alertname label")
		}
		t := AlertmanagerPrefix + *a.Labels.Alertname
		if err := validTopic(t); err != nil {
			return nil, badRequest("bad webhook alert: alertname makes a bad topic: " + err.Error())
		}
		evs = append(evs, &event.Event{Source: Source, Topic: t, Payload: raw, Received: now})
	}
	return evs, nil
}

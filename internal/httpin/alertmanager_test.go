package httpin

import (
	"net/http"
	"strings"
	"testing"
)

// An Alertmanager webhook_config payload (version 4), shortened from
// what Alertmanager sends.
const webhookBody = `{
  "version": "4", "groupKey": "{}:{alertname=\"DiskFull\"}", "truncatedAlerts": 0,
  "status": "firing", "receiver": "alertd",
  "groupLabels": {"alertname": "DiskFull"}, "commonLabels": {}, "commonAnnotations": {},
  "externalURL": "http://alertmanager:9093",
  "alerts": [
    {"status": "firing", "labels": {"alertname": "DiskFull", "instance": "nas:9100", "severity": "critical"},
     "annotations": {"summary": "disk 97% full"}, "startsAt": "2025-07-01T11:58:00Z",
     "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus/graph", "fingerprint": "a1b2"},
    {"status": "resolved", "labels": {"alertname": "NodeDown", "instance": "pi:9100"},
     "annotations": {}, "startsAt": "2025-07-01T10:00:00Z", "endsAt": "2025-07-01T11:00:00Z", "fingerprint": "c3d4"}
  ]
}`

func TestAlertmanager(t *testing.T) {
	ts := start(t, Options{}, nil)
	a := ts.post(t, "/v1/alertmanager", "application/json", webhookBody)
	a.wantAccepted(t)
	if ids, _ := a.body["ids"].([]any); len(ids) != 2 {
		t.Errorf("body = %s, want two ids", a.raw)
	}
	evs, _ := ts.sink.recorded()
	if len(evs) != 2 {
		t.Fatalf("%d events, want 2", len(evs))
	}
	for i, want := range []struct{ topic, payloadStart string }{
		{"alertmanager/DiskFull", `{"status": "firing", "labels": {"alertname": "DiskFull"`},
		{"alertmanager/NodeDown", `{"status": "resolved", "labels": {"alertname": "NodeDown"`},
	} {
		ev := evs[i]
		if ev.Topic != want.topic || !strings.HasPrefix(string(ev.Payload), want.payloadStart) || ev.Source != "http" || !strings.HasSuffix(string(ev.Payload), "}") {
			t.Errorf("event %d = %s %s, want %s with the alert as sent", i, ev.Topic, ev.Payload, want.topic)
		}
	}
}

func TestAlertmanagerRefused(t *testing.T) {
	ts := start(t, Options{}, nil)
	for _, tc := range []struct{ name, body, err string }{
		{"no alerts", `{"version":"4","alerts":[]}`, "no alerts"},
		{"alerts not a list", `{"alerts":{}}`, "bad webhook"},
		{"no alertname", `{"alerts":[{"labels":{"alertname":"A"}},{"labels":{}}]}`, "no alertname"},
		{"alertname a wildcard", `{"alerts":[{"labels":{"alertname":"A"}},{"labels":{"alertname":"x/+"}}]}`, "wildcards"},
		{"alertname with a newline", `{"alerts":[{"labels":{"alertname":"a\nb"}}]}`, "CR or LF"},
		{"alertname a dot segment", `{"alerts":[{"labels":{"alertname":".."}}]}`, `".."`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts.post(t, "/v1/alertmanager", "application/json", tc.body).wantError(t, http.StatusBadRequest, tc.err)
		})
	}
	ts.post(t, "/v1/alertmanager", "text/plain", webhookBody).wantError(t, http.StatusUnsupportedMediaType, "Content-Type")
	if evs := mustEvents(ts); len(evs) != 0 {
		t.Errorf("a refused webhook committed %d events: every alert is checked first", len(evs))
	}
}

func TestAlertmanagerSinkFails(t *testing.T) {
	ts := start(t, Options{}, &recordingSink{err: errorString("store closed"), errAt: 2})
	ts.post(t, "/v1/alertmanager", "application/json", webhookBody).wantError(t, http.StatusServiceUnavailable, "retry")
}

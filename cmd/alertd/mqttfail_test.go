package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/mqtttest"
)

// TestRunSaysWhyMQTTIsNotReady: a broker that refuses the password, or
// none at all. alertd keeps retrying every second; its log says why in
// plain words once, not once per retry (and paho's own per-attempt lines
// stay out of it), and /healthz answers 503 with the same reason.
func TestRunSaysWhyMQTTIsNotReady(t *testing.T) {
	broker := mqtttest.StartWithUsers(t, map[string]string{"alertd": "the-right-password"})
	closed := fmt.Sprintf("127.0.0.1:%d", closedPort(t))
	for _, tc := range []struct {
		name, broker, health, level string
	}{
		{"wrong password", broker.URL(), "mqtt: the broker refused the credentials (not authorized); check mqtt.username and mqtt.password", "level=ERROR"},
		{"no broker", "tcp://" + closed, "mqtt: nothing listens at " + closed + " (connection refused); check mqtt.broker and that the broker runs", "level=WARN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			httpAddr := freePort(t)
			config := filepath.Join(dir, "alertd.yaml")
			if err := os.WriteFile(config, []byte(fmt.Sprintf(`mqtt:
  broker: %s
  username: alertd
  password: ${MQTT_PASSWORD}
http: {listen: %s}
store: {path: alertd.db}
defaults: {to: [ops@example.org]}
rules:
  - {name: hot, topic: "sensors/+/telemetry", field: temp, above: 30}
`, tc.broker, httpAddr)), 0o600); err != nil {
				t.Fatal(err)
			}
			run := startRun(t, config, httpAddr, "MQTT_PASSWORD=not-the-password")
			run.waitBody(t, "/healthz", tc.health)
			time.Sleep(3500 * time.Millisecond) // three more attempts
			code, body := run.get(t, "/healthz")
			if code != 503 || !strings.HasPrefix(body, tc.health) {
				t.Errorf("/healthz %d %q, want 503 %q", code, body, tc.health)
			}
			logs := run.logs.String()
			var about []string
			for _, l := range lines(logs) {
				if strings.Contains(l, "cannot connect") || strings.Contains(l, "component=paho") && !strings.Contains(l, "level=DEBUG") {
					about = append(about, l)
				}
			}
			why := strings.TrimPrefix(tc.health, "mqtt: ")
			if len(about) != 1 || !strings.Contains(about[0], tc.level+` msg="mqtt: cannot connect to the broker; retrying every second"`) ||
				!strings.Contains(about[0], `why="`+why) {
				t.Errorf("log lines about the connection:\n%s\nwant one %s line saying %q", strings.Join(about, "\n"), tc.level, why)
			}
			if strings.Contains(logs, "not-the-password") {
				t.Error("the MQTT password shows in the log")
			}
		})
	}
}

package mqtttest

import (
	"testing"

	"github.com/alertd/alertd/internal/testcert"
)

// StartTLS runs a broker whose listener speaks MQTT over TLS only, with a
// throw-away certificate for 127.0.0.1 and localhost (its PEM in CAFile).
func StartTLS(t testing.TB) *Mosquitto {
	t.Helper()
	m := &Mosquitto{t: t, dir: t.TempDir(), port: freePort(t), plain: freePort(t)}
	c := testcert.New(t, m.dir, "mqtttest")
	m.CAFile = c.CertFile
	m.tls = "certfile " + c.CertFile + "\nkeyfile " + c.KeyFile + "\n"
	m.start()
	t.Cleanup(m.Stop)
	return m
}

// TLSURL is ssl://host:port.
func (m *Mosquitto) TLSURL() string { return "ssl://" + m.Addr() }

// StartWebsockets runs a broker whose listener speaks MQTT over websockets
// (ws://127.0.0.1:port, path /mqtt as paho sends).
func StartWebsockets(t testing.TB) *Mosquitto {
	t.Helper()
	m := &Mosquitto{t: t, dir: t.TempDir(), port: freePort(t), plain: freePort(t)}
	m.tls = "protocol websockets\n"
	m.start()
	t.Cleanup(m.Stop)
	return m
}

// WebsocketURL is ws://host:port/mqtt.
func (m *Mosquitto) WebsocketURL() string { return "ws://" + m.Addr() + "/mqtt" }

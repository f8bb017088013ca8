// Package mqtttest runs a real Mosquitto broker for tests: a process of
// Debian's mosquitto package on a free loopback port, with persistence in
// the test's temporary directory so a restart keeps sessions and queued
// QoS 1 messages. It fails the test with a clear message when Mosquitto is
// not installed: integration tests are never skipped silently.
package mqtttest

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Mosquitto is a broker process owned by one test.
type Mosquitto struct {
	t     testing.TB
	dir   string
	port  int
	cmd   *exec.Cmd
	exit  chan struct{}
	users map[string]string // nil: anonymous clients are allowed
	// CAFile is, for a broker from StartTLS, the PEM of its self-signed
	// certificate (mqtt.tls.ca_file).
	CAFile string
	tls    string // listener lines for TLS, "" for plain MQTT
	// plain is a second, plain MQTT listener's port beside a TLS or
	// websocket one (0: none), for a test's publisher.
	plain int
}

// Binary finds the mosquitto executable.
func Binary() (string, error) {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("mosquitto not found: install it with `apt-get install -y mosquitto` (the README's test command does)")
}

// Start runs a broker on a free port; it stops at test cleanup.
func Start(t testing.TB) *Mosquitto {
	t.Helper()
	m := &Mosquitto{t: t, dir: t.TempDir(), port: freePort(t)}
	m.start()
	t.Cleanup(m.Stop)
	return m
}

// StartWithUsers runs a broker that lets in only these users (name →
// password), from a password file made with mosquitto_passwd, as an
// operator sets one up.
func StartWithUsers(t testing.TB, users map[string]string) *Mosquitto {
	t.Helper()
	m := &Mosquitto{t: t, dir: t.TempDir(), port: freePort(t), users: users}
	m.start()
	t.Cleanup(m.Stop)
	return m
}

// StartOn runs a broker on addr (127.0.0.1:port), for a test that needs
// it where a client already tries to connect.
func StartOn(t testing.TB, addr string) *Mosquitto {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	port, perr := strconv.Atoi(p)
	if err != nil || perr != nil {
		t.Fatalf("mqtttest.StartOn(%q): not 127.0.0.1:port", addr)
	}
	m := &Mosquitto{t: t, dir: t.TempDir(), port: port}
	m.start()
	t.Cleanup(m.Stop)
	return m
}

func freePort(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func (m *Mosquitto) start() {
	m.t.Helper()
	bin, err := Binary()
	if err != nil {
		m.t.Fatal(err)
	}
	conf := fmt.Sprintf(`listener %d 127.0.0.1
%s%spersistence true
persistence_location %s/
autosave_interval 1
max_queued_messages 0
max_inflight_messages 20
log_dest file %s
log_type error
log_type warning
log_type notice
`, m.port, m.tls, m.access(), m.dir, filepath.Join(m.dir, "mosquitto.log"))
	if m.plain != 0 {
		conf += fmt.Sprintf("listener %d 127.0.0.1\n", m.plain)
	}
	if os.Geteuid() == 0 {
		conf += "user root\n" // else it drops to a user that cannot write t.TempDir()
	}
	path := filepath.Join(m.dir, "mosquitto.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		m.t.Fatal(err)
	}
	m.cmd = exec.Command(bin, "-c", path)
	if err := m.cmd.Start(); err != nil {
		m.t.Fatalf("start mosquitto: %v", err)
	}
	m.exit = make(chan struct{})
	go func(cmd *exec.Cmd, exit chan struct{}) { _ = cmd.Wait(); close(exit) }(m.cmd, m.exit)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", m.Addr(), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-m.exit:
			log, _ := os.ReadFile(filepath.Join(m.dir, "mosquitto.log"))
			m.t.Fatalf("mosquitto exited at start:\n%s", log)
		case <-time.After(50 * time.Millisecond):
		}
	}
	m.t.Fatalf("mosquitto did not listen on %s within 10s", m.Addr())
}

// access is the configuration lines that say who may connect.
func (m *Mosquitto) access() string {
	if m.users == nil {
		return "allow_anonymous true\n"
	}
	file := filepath.Join(m.dir, "passwd")
	for user, pass := range m.users {
		args := []string{"-b", file, user, pass}
		if _, err := os.Stat(file); err != nil {
			args = append([]string{"-c"}, args...) // create it
		}
		if out, err := exec.Command("mosquitto_passwd", args...).CombinedOutput(); err != nil {
			m.t.Fatalf("mosquitto_passwd (Debian's mosquitto package has it): %v\n%s", err, out)
		}
	}
	return "allow_anonymous false\npassword_file " + file + "\n"
}

// Addr is host:port.
func (m *Mosquitto) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(m.port)) }

// PlainURL is the plain MQTT listener beside a TLS or websocket one.
func (m *Mosquitto) PlainURL() string {
	return "tcp://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(m.plain))
}

// URL is tcp://host:port.
func (m *Mosquitto) URL() string { return "tcp://" + m.Addr() }

// Stop terminates the broker gracefully (it saves its persistence file).
func (m *Mosquitto) Stop() {
	if m.cmd == nil || m.cmd.Process == nil {
		return
	}
	_ = m.cmd.Process.Signal(os.Interrupt)
	select {
	case <-m.exit:
	case <-time.After(5 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.exit
	}
	m.cmd = nil
}

// Restart stops the broker and starts it again on the same port with the
// same persistence directory.
func (m *Mosquitto) Restart() {
	m.t.Helper()
	m.Stop()
	m.start()
}

// Outage stops the broker, keeps it down for d, then starts it again on
// the same port. It returns when the broker accepts connections again.
func (m *Mosquitto) Outage(d time.Duration) {
	m.t.Helper()
	m.Stop()
	time.Sleep(d)
	m.start()
}

// Publisher is a plain MQTT client for a test to publish readings with, as
// a device would.
type Publisher struct{ c mqtt.Client }

// NewPublisher connects a publisher to url.
func NewPublisher(t testing.TB, url string) *Publisher {
	t.Helper()
	opts := mqtt.NewClientOptions().AddBroker(url).
		SetClientID(fmt.Sprintf("test-pub-%d", time.Now().UnixNano())).
		SetConnectTimeout(5 * time.Second).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(200 * time.Millisecond).SetWriteTimeout(5 * time.Second)
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher connect to %s: %v", url, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return &Publisher{c: c}
}

// Publish sends payload at QoS 1 and waits for the broker's PUBACK.
func (p *Publisher) Publish(t testing.TB, topic, payload string) {
	t.Helper()
	p.PublishRetained(t, topic, payload, false)
}

// PublishRetained is Publish with the retain flag set as given.
func (p *Publisher) PublishRetained(t testing.TB, topic, payload string, retain bool) {
	t.Helper()
	tok := p.c.Publish(topic, 1, retain, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// Retained reads the retained message on topic, waiting up to timeout for
// one whose payload satisfies ok; it returns "" when none does.
func Retained(t testing.TB, url, topic string, timeout time.Duration, ok func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		got := make(chan string, 1)
		opts := mqtt.NewClientOptions().AddBroker(url).
			SetClientID(fmt.Sprintf("test-sub-%d", time.Now().UnixNano())).SetConnectTimeout(5 * time.Second)
		c := mqtt.NewClient(opts)
		if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("subscriber connect to %s: %v", url, tok.Error())
		}
		c.Subscribe(topic, 1, func(_ mqtt.Client, m mqtt.Message) {
			if m.Retained() {
				select {
				case got <- string(m.Payload()):
				default:
				}
			}
		})
		var payload string
		select {
		case payload = <-got:
		case <-time.After(300 * time.Millisecond):
		}
		c.Disconnect(50)
		if payload != "" && ok(payload) {
			return payload
		}
		time.Sleep(50 * time.Millisecond)
	}
	return ""
}

// Device is an MQTT client with a last will, like an ESP32 that sets
// "offline" on its status topic. Vanish drops its connection without a
// DISCONNECT, so the broker publishes the will.
type Device struct{ conn net.Conn }

// NewDevice connects with a retained QoS 1 will (willTopic, willPayload).
func NewDevice(t testing.TB, addr, clientID, willTopic, willPayload string) *Device {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	str := func(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
	var body []byte
	body = append(body, str("MQTT")...)
	body = append(body, 4)                   // protocol level 3.1.1
	body = append(body, 0x02|0x04|0x08|0x20) // clean session, will, will QoS 1, will retain
	body = append(body, 0, 60)               // keepalive 60 s
	body = append(body, str(clientID)...)
	body = append(body, str(willTopic)...)
	body = append(body, str(willPayload)...)
	pkt := append([]byte{0x10}, remainingLength(len(body))...)
	pkt = append(pkt, body...)
	if _, err := conn.Write(pkt); err != nil {
		t.Fatal(err)
	}
	ack := make([]byte, 4)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(conn, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
		t.Fatalf("device connect: %v %x", err, ack)
	}
	t.Cleanup(func() { conn.Close() })
	return &Device{conn: conn}
}

// Vanish closes the TCP connection abruptly (a power cut).
func (d *Device) Vanish() { _ = d.conn.Close() }

func remainingLength(n int) []byte {
	var out []byte
	for {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		out = append(out, b)
		if n == 0 {
			return out
		}
	}
}

package smtpin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	ok := Options{Listen: "127.0.0.1:2525", Hostname: "pi.lan", RelayTo: []string{"ops@example.org", "@Example.net"},
		From: "alertd@example.org", Users: Users{"arduino": "pw"}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("a good config: %v", err)
	}
	cases := []struct {
		field string
		edit  func(o *Options)
	}{
		{"listen", func(o *Options) { o.Listen = "" }},
		{"hostname", func(o *Options) { o.Hostname = "pi lan" }},
		{"relay_to[1]", func(o *Options) { o.RelayTo = []string{"ops@example.org", "example.org"} }},
		{"relay_to[0]", func(o *Options) { o.RelayTo = []string{"<ops@example.org>"} }},
		{"from", func(o *Options) { o.From = "" }},
		{"users", func(o *Options) { o.Users = Users{"arduino": ""} }},
		{"networks[0]", func(o *Options) { o.Networks = []netip.Prefix{{}} }},
	}
	for _, tc := range cases {
		o := ok
		tc.edit(&o)
		var ce *ConfigError
		if err := o.Validate(); !errors.As(err, &ce) || ce.Field != tc.field {
			t.Errorf("%s: got %v, want a ConfigError for %s", tc.field, err, tc.field)
		}
	}
	noRelay := ok
	noRelay.RelayTo, noRelay.From = nil, ""
	if err := noRelay.Validate(); err != nil {
		t.Errorf("no relay_to needs no from: %v", err)
	}
}

func TestUsersNeverShowAPassword(t *testing.T) {
	u := Users{"arduino": "hunter2", "esp32": "tr0ub4dor"}
	o := Options{Users: u}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("opts", "users", u)
	for _, s := range []string{fmt.Sprint(u), fmt.Sprintf("%v %+v %#v %s %q %x", u, u, u, u, u, u),
		fmt.Sprintf("%+v", o), fmt.Sprintf("%#v", o), logged.String()} {
		if strings.Contains(s, "hunter2") || strings.Contains(s, "tr0ub4dor") || strings.Contains(s, "68756e74657232") {
			t.Errorf("a password shows: %s", s)
		}
	}
	if got := u.String(); got != "[arduino:<secret> esp32:<secret>]" {
		t.Errorf("String %q", got)
	}
}

func TestNetworksMatchMappedAddresses(t *testing.T) {
	p := &policy{networks: defaultNetworks}
	for addr, want := range map[string]bool{"127.0.0.1": true, "::ffff:127.0.0.9": true, "::1": true, "192.168.1.5": false, "::ffff:192.168.1.5": false} {
		if got := p.allowed(netip.MustParseAddr(addr)); got != want {
			t.Errorf("allowed(%s) = %v", addr, got)
		}
	}
	if got := addressLiteral(netip.MustParseAddr("::1")); got != "[IPv6:::1]" {
		t.Errorf("literal %q", got)
	}
}

// TestShutdownLetsAMailInFlightFinish: when Run's context ends, a mail in
// DATA still gets its commit and its 250; an idle session is closed once
// the grace period is over.
func TestShutdownLetsAMailInFlightFinish(t *testing.T) {
	sink := &recSink{arrived: make(chan struct{}, 10)}
	entered, release := make(chan struct{}), make(chan struct{})
	sink.answer = func(ctx context.Context, _ *Mail) (Outcome, error) {
		close(entered)
		<-release
		return Outcome{}, ctx.Err()
	}
	srv, err := Listen(Options{Listen: "127.0.0.1:0", Hostname: testHost, ShutdownGrace: 500 * time.Millisecond}, sink)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { srv.Close() })

	idle := dial(t, srv.Addr().String())
	idle.expect("220")
	c := dial(t, srv.Addr().String())
	c.expect("220")
	c.send("EHLO dev", "MAIL FROM:<a@casa.lan>", "RCPT TO:<alertd@"+testHost+">", "DATA")
	for range 3 {
		c.expect("250")
	}
	c.expect("354")
	c.send("Subject: x", "", "y", ".")
	<-entered
	cancel()
	time.AfterFunc(100*time.Millisecond, func() { close(release) })
	c.expect("250")
	idle.closed()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
	if late := dialQuiet(srv.Addr().String()); late == nil {
		t.Error("the listener still accepts after Run returned")
	}
}

// dialQuiet reports a dial error, nil when the dial succeeds.
func dialQuiet(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
	}
	return err
}

func TestLatin1SubjectIsEncodedWhenRelayed(t *testing.T) {
	e := start(t, Options{})
	m := sendOne(t, e, []string{"ops@example.org"}, "Subject: sal\xf3n a 31\xb0\r\n\r\nx")
	if !strings.Contains(string(m.Relayed), "\r\nSubject: =?utf-8?q?sal=C3=B3n_a_31=C2=B0?=\r\n") {
		t.Errorf("subject not encoded:\n%s", m.Relayed)
	}
	if m.Subject != "salón a 31°" {
		t.Errorf("Subject %q", m.Subject)
	}
}

func TestLongLineInDataEndsTheSession(t *testing.T) {
	e := start(t, Options{MaxLineLength: 1000})
	c := dial(t, e.addr)
	c.expect("220")
	c.send("EHLO dev", "MAIL FROM:<a@casa.lan>", "RCPT TO:<ops@example.org>", "DATA")
	for range 3 {
		c.expect("250")
	}
	c.expect("354")
	c.send("Subject: x", "", strings.Repeat("z", 3000), ".")
	c.expect("500")
	if len(e.sink.Mails()) != 0 || e.counts.get(Error) != 1 {
		t.Errorf("mails %d, error %d", len(e.sink.Mails()), e.counts.get(Error))
	}
}

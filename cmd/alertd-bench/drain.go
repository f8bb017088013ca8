package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/alertd/alertd/internal/app"
	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/mailer"
	"github.com/alertd/alertd/internal/outbox"
	"github.com/alertd/alertd/internal/store"
)

// sink is a local SMTP server that accepts and counts.
type sink struct {
	srv  *smtp.Server
	port int
	n    atomic.Int64
}

type sinkSession struct{ s *sink }

func (x sinkSession) Mail(string, *smtp.MailOptions) error { return nil }
func (x sinkSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (x sinkSession) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	x.s.n.Add(1)
	return nil
}
func (x sinkSession) Reset()        {}
func (x sinkSession) Logout() error { return nil }

func startSink() (*sink, error) {
	s := &sink{}
	s.srv = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return sinkSession{s}, nil }))
	s.srv.Domain = "sink.localhost"
	port, err := startSinkWith(s.srv)
	s.port = port
	return s, err
}

// startSinkWith serves srv on a free loopback port.
func startSinkWith(srv *smtp.Server) (int, error) {
	srv.ErrorLog = log.New(io.Discard, "", 0)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	go func() { _ = srv.Serve(l) }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func testMail(i int) []byte {
	now := time.Now()
	msg, _ := mailer.Compose(mailer.Mail{
		From: "alertd <alertd@example.org>", To: []string{"ops@example.org"},
		Subject: fmt.Sprintf("[warning] hot: dev%05d temp=31.5", i), Body: "Firing: hot on fleet/dev/telemetry.\n",
		Date: now, MessageID: mailer.NewMessageID(now, "alertd@example.org"),
	})
	return msg
}

// drainBare is the reference: one go-smtp client session sending n mails
// back to back, with nothing stored.
func drainBare(n int) (float64, error) {
	s, err := startSink()
	if err != nil {
		return 0, err
	}
	defer s.srv.Close()
	msgs := make([][]byte, n)
	for i := range msgs {
		msgs[i] = testMail(i)
	}
	t0 := time.Now()
	c, err := smtp.Dial(fmt.Sprintf("127.0.0.1:%d", s.port))
	if err != nil {
		return 0, err
	}
	defer c.Close()
	for _, m := range msgs {
		if err := c.SendMail("alertd@example.org", []string{"ops@example.org"}, strings.NewReader(string(m))); err != nil {
			return 0, err
		}
	}
	return float64(n) / time.Since(t0).Seconds(), nil
}

// drainAlertd queues n mails in a store, then starts alertd on it and
// times until the sink has them all.
func drainAlertd(broker, dir string, n, sessions int) (float64, error) {
	s, err := startSink()
	if err != nil {
		return 0, err
	}
	defer s.srv.Close()
	path := filepath.Join(dir, "alertd.db")
	db, _, err := store.Open(path)
	if err != nil {
		return 0, err
	}
	for i := 0; i < n; {
		err := db.Update(func(tx *store.Tx) error {
			for j := 0; j < 1000 && i < n; j, i = j+1, i+1 {
				m := testMail(i)
				if err := outbox.Put(tx, &outbox.Entry{Rule: "hot", Series: "fleet", From: "alertd@example.org",
					To: []string{"ops@example.org"}, Subject: "s", Message: m, Created: time.Now(), Next: time.Now()}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			db.Close()
			return 0, err
		}
	}
	db.Close()
	y := fmt.Sprintf(`mqtt: {broker: %q, client_id: bench-drain-%d}
smtp: {host: 127.0.0.1, port: %d, security: none, auth: none, from: "alertd <alertd@example.org>", max_connections: %d}
store: {path: %q}
http: {listen: "off"}
log: {level: error}
defaults: {to: [ops@example.org]}
rules:
  - {name: hot, topic: "fleet/+/telemetry", field: temp, above: 30}
`, broker, time.Now().UnixNano(), s.port, sessions, path)
	cfg, err := config.Load(strings.NewReader(y), filepath.Join(dir, "alertd.yaml"))
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	a, err := app.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	last, lastChange := int64(0), time.Now()
	for s.n.Load() < int64(n) {
		if got := s.n.Load(); got != last {
			last, lastChange = got, time.Now()
		}
		if time.Since(lastChange) > 10*time.Second {
			return 0, errors.New("drain stalled")
		}
		time.Sleep(2 * time.Millisecond)
	}
	return float64(n) / time.Since(t0).Seconds(), nil
}

package app

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/alertd/alertd/internal/httpapi"
	"github.com/alertd/alertd/internal/mailer"
)

// preflight tries the SMTP settings once at start — connect, EHLO,
// STARTTLS, AUTH, QUIT, never MAIL — so that a wrong port or password is
// seen at start, not at the first alert. It runs beside everything else
// and never holds up or prevents the start: the mail it would have found
// undeliverable stays queued as always. Its outcome is logged once, shown
// in /healthz?verbose=1 and exported as alertd_smtp_preflight_ok.
type preflight struct {
	a     *App
	probe *mailer.SMTPTransport // a session of its own, not the deliverer's

	mu     sync.Mutex
	status string // what /healthz?verbose=1 says
}

// newPreflight prepares the check; nil when mail goes to the spool.
func (a *App) newPreflight() (*preflight, error) {
	if a.cfg.SMTP == nil {
		return nil, nil
	}
	t, err := a.newTransport()
	if err != nil {
		return nil, err
	}
	return &preflight{a: a, probe: t.(*mailer.SMTPTransport), status: "running"}, nil
}

// run tries the settings and reports the outcome; it returns when done or
// when ctx ends.
func (p *preflight) run(ctx context.Context) {
	if p == nil {
		return
	}
	s := p.a.config().SMTP
	server := fmt.Sprintf("%s:%d", s.Host, s.Port)
	log := p.a.log.With("component", "smtp", "server", server)
	res, err := p.probe.Probe(ctx)
	if ctx.Err() != nil {
		return // stopped before it could tell
	}
	if err == nil {
		p.set("ok: " + res.String())
		p.a.metrics.SMTPPreflight(true)
		log.Info("smtp preflight passed: alerts can be mailed", "detail", res.String())
		return
	}
	why := err.Error()
	var me *mailer.Error
	level := log.Warn
	if errors.As(err, &me) {
		why = me.Explain(server)
		if me.Kind == mailer.KindAuth || me.Kind == mailer.KindConfig {
			level = log.Error // the settings, not a passing outage
		}
	}
	p.set("failed: " + why)
	p.a.metrics.SMTPPreflight(false)
	level("smtp preflight failed: alerts will stay queued until this is fixed (alertd keeps running; nothing was sent)", "why", why)
}

func (p *preflight) set(status string) {
	p.mu.Lock()
	p.status = status
	p.mu.Unlock()
}

// checks is what /healthz?verbose=1 shows of it.
func (p *preflight) checks() []httpapi.Check {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return []httpapi.Check{{Name: "smtp preflight", Status: p.status}}
}

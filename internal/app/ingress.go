package app

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/event"
	"github.com/alertd/alertd/internal/httpin"
	"github.com/alertd/alertd/internal/notify"
	"github.com/alertd/alertd/internal/smtpin"
)

// ingress is what the SMTP and HTTP listeners commit through: an event
// goes through the rules as an MQTT reading does, and a mail from a
// device goes to the outbox through the same gate as alert mail — the
// cooldown holds back the same mail sent again (sender, subject and text),
// the rate limit bounds what one client may send — so a looping sketch
// cannot flood the upstream account. Both return only after the commit.
type ingress struct {
	a   *App
	seq atomic.Uint64
}

var (
	_ smtpin.Sink = (*ingress)(nil)
	_ httpin.Sink = (*ingress)(nil)
)

// Event hands an HTTP event to the rules.
func (in *ingress) Event(_ context.Context, ev *event.Event) (string, error) {
	if err := in.a.eng.Handle(ev); err != nil {
		return "", err
	}
	return "ev-" + strconv.FormatUint(in.seq.Add(1), 10) + "-" + strconv.FormatInt(ev.Received.UnixNano(), 36), nil
}

// Mail queues a mail a device posted over HTTP.
func (in *ingress) Mail(_ context.Context, m *httpin.Mail) (httpin.Outcome, error) {
	msgID, msg, err := in.a.notify.ComposeDeviceMail(m.Client, m.To, m.Subject, m.Text)
	if err != nil {
		return httpin.Outcome{}, err
	}
	d, id, err := in.relay(notify.Relay{
		Client: m.Client, Key: "http\x00" + m.Subject + "\x00" + m.Text, Series: "http/" + m.Client.String(),
		To: m.To, Subject: m.Subject, MessageID: msgID, Message: msg,
	})
	now := in.a.now()
	switch {
	case err != nil:
		return httpin.Outcome{}, err
	case d.Reason == notify.RateLimited:
		return httpin.Outcome{}, &httpin.RateLimitedError{RetryAfter: max(d.Reopens.Sub(now), time.Second)}
	}
	return httpin.Outcome{ID: strconv.FormatUint(id, 10), Duplicate: d.Reason == notify.Cooldown}, nil
}

// Accept commits a mail a device sent over SMTP: its relayed copy, then
// its event.
func (in *ingress) Accept(_ context.Context, m *smtpin.Mail) (smtpin.Outcome, error) {
	out := smtpin.Outcome{ID: m.ID}
	if len(m.Relay) > 0 {
		d, id, err := in.relay(notify.Relay{
			Client: m.Client, Key: "smtp\x00" + m.DedupeKey(), Series: m.Event.Topic,
			To: m.Relay, Subject: m.Subject, MessageID: m.MessageID, Message: m.Relayed,
		})
		switch {
		case err != nil:
			return out, err
		case d.Reason == notify.RateLimited:
			return smtpin.Outcome{Held: smtpin.HeldRateLimited, RetryAfter: max(d.Reopens.Sub(in.a.now()), time.Second)}, nil
		case d.Reason == notify.Cooldown:
			out.Held = smtpin.HeldDuplicate
		default:
			out.ID = strconv.FormatUint(id, 10)
		}
	}
	ev := m.Event
	if err := in.a.eng.Handle(&ev); err != nil {
		return out, err
	}
	return out, nil
}

// relay fills in the limits and queues r.
func (in *ingress) relay(r notify.Relay) (notify.Decision, uint64, error) {
	lim := in.a.relayLimits()
	r.Cooldown, r.Limit, r.Per = lim.cooldown, lim.rate.N, lim.rate.Per
	return in.a.notify.QueueRelay(r)
}

type relayLimits struct {
	cooldown time.Duration
	rate     config.Rate
}

// relayLimits are ingress.cooldown and ingress.rate_limit.
func (a *App) relayLimits() relayLimits {
	a.cfgMu.Lock()
	defer a.cfgMu.Unlock()
	return relayLimits{cooldown: a.cfg.Ingress.Cooldown.D(), rate: a.cfg.Ingress.RateLimit}
}

// listenIngress binds the configured device listeners.
func (a *App) listenIngress() (smtpSrv *smtpin.Server, httpSrv *httpin.Server, err error) {
	in := a.cfg.Ingress
	sink := &ingress{a: a}
	if s := in.SMTP; s != nil {
		opts := smtpin.Options{
			Listen: s.Listen, Hostname: s.Hostname, RelayTo: in.RelayTo, From: a.notify.EnvelopeFrom(),
			MaxMessageBytes: int64(s.MaxMessageBytes), ShutdownGrace: 2 * time.Second,
			Log: a.log.With("component", "smtp-ingress"), Now: a.now,
			Count: func(r smtpin.Result) { a.metrics.IngressSMTP.WithLabelValues(string(r)).Inc() },
		}
		for _, n := range s.Networks {
			p, err := netip.ParsePrefix(strings.TrimSpace(n))
			if err != nil {
				return nil, nil, fmt.Errorf("ingress.smtp.networks: %w", err)
			}
			opts.Networks = append(opts.Networks, p)
		}
		if len(s.Users) > 0 {
			opts.Users = smtpin.Users{}
			for _, u := range s.Users {
				opts.Users[u.Username] = u.Password.Reveal()
			}
		}
		if s.TLS.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(s.TLS.CertFile, s.TLS.KeyFile)
			if err != nil {
				return nil, nil, fmt.Errorf("ingress.smtp.tls: %w", err)
			}
			opts.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		}
		if smtpSrv, err = smtpin.Listen(opts, sink); err != nil {
			return nil, nil, fmt.Errorf("ingress.smtp: %w", err)
		}
	}
	if h := in.HTTP; h != nil {
		for _, r := range httpin.Results() {
			a.metrics.IngressHTTP.WithLabelValues(r) // present at 0 from the start
		}
		tokens := make([]string, len(h.Tokens))
		for i, t := range h.Tokens {
			tokens[i] = t.Reveal()
		}
		httpSrv, err = httpin.Listen(httpin.Options{
			Listen: h.Listen, Tokens: tokens, RelayTo: in.RelayTo, MaxBodyBytes: int64(h.MaxBodyBytes),
			Log: a.log.With("component", "http-ingress"), Now: a.now,
			Count: func(r string) { a.metrics.IngressHTTP.WithLabelValues(r).Inc() },
		}, sink)
		if err != nil {
			if smtpSrv != nil {
				_ = smtpSrv.Close()
			}
			return nil, nil, fmt.Errorf("ingress.http: %w", err)
		}
	}
	return smtpSrv, httpSrv, nil
}

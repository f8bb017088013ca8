package app

import (
	"sync/atomic"

	"github.com/alertd/alertd/internal/httpapi"
)

// source is one way devices reach alertd (MQTT, the SMTP and HTTP
// listeners), with its own readiness: /healthz names each one that is not
// ready, and alertd_source_up{source} shows each.
type source struct {
	name  string
	ready func() bool
	why   string // what /healthz says while it is not ready
	// reason, when set and not "", says better than why what is wrong
	// (the broker refused the credentials...).
	reason func() string
}

// sources is the set Run started; it is fixed once Run has started.
type sources []source

func (ss sources) health() []httpapi.SourceHealth {
	out := make([]httpapi.SourceHealth, len(ss))
	for i, s := range ss {
		out[i] = httpapi.SourceHealth{Name: s.name, Ready: s.ready(), Why: s.why}
		if s.reason != nil {
			if r := s.reason(); r != "" {
				out[i].Why = r
			}
		}
	}
	return out
}

func (ss sources) ready() bool {
	for _, s := range ss {
		if !s.ready() {
			return false
		}
	}
	return len(ss) > 0
}

// serving is a listener's readiness: up from when it runs until it stops.
type serving struct{ up atomic.Bool }

func (s *serving) ready() bool { return s.up.Load() }

// run runs f with s up.
func (s *serving) run(f func() error) error {
	s.up.Store(true)
	defer s.up.Store(false)
	return f()
}

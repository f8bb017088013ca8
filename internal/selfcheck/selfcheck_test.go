package selfcheck

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/event"
)

type handlerFunc func(*event.Event) error

func (f handlerFunc) Handle(ev *event.Event) error { return f(ev) }

// The readings say how long a source has been away (counted from the
// first tick it was seen away, back to 0 when it returns) and how old the
// oldest waiting mail is; the built-in rules watch exactly those fields.
func TestReadings(t *testing.T) {
	var up atomic.Bool
	var mu sync.Mutex
	var seen []string
	now := time.Unix(1_800_000_000, 0)
	var tick atomic.Int64
	s := &Source{
		Probes: []Probe{{Name: "mqtt", Ready: up.Load}},
		Oldest: func() (time.Time, error) { return now.Add(-90 * time.Second), nil },
		Every:  10 * time.Millisecond,
		Now:    func() time.Time { return now.Add(time.Duration(tick.Add(1)) * time.Minute) },
		Handler: handlerFunc(func(ev *event.Event) error {
			mu.Lock()
			seen = append(seen, ev.Topic+" "+string(ev.Payload))
			mu.Unlock()
			return nil
		}),
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Run(ctx); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if n >= 6 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	up.Store(true)
	time.Sleep(50 * time.Millisecond)
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	all := strings.Join(seen, "\n")
	for _, want := range []string{`$alertd/source/mqtt {"down_seconds": 0}`, `$alertd/source/mqtt {"down_seconds": 120}`,
		`$alertd/outbox {"oldest_pending_seconds": 150}`} {
		if !strings.Contains(all, want) {
			t.Errorf("readings lack %q:\n%s", want, all)
		}
	}
	if !strings.HasSuffix(strings.Split(all, "\n")[len(seen)-2], `{"down_seconds": 0}`) {
		t.Errorf("back to 0 once the source is ready:\n%s", all)
	}
	r := Rules(&config.Config{SMTP: &config.SMTP{}, SelfAlerts: config.SelfAlerts{To: []string{"ops@example.org"},
		SourceDownAfter: config.Duration(5 * time.Minute), MailDelayedAfter: config.Duration(15 * time.Minute)}})
	if len(r) != 2 || r[0].Field != "down_seconds" || *r[0].Above != 299.5 || r[1].Field != "oldest_pending_seconds" {
		t.Errorf("built-in rules %+v", r)
	}
}

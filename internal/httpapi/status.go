package httpapi

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"html/template"
	"io/fs"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/alertd/alertd/internal/silence"
)

// The status page (GET /) is read-only and server-rendered: html/template
// escapes every value (topics, payload values, server replies and
// silence comments are whatever a device or a server sent), the assets
// are embedded, and a small script refreshes it in place. Unlike /api it
// answers wherever http.listen is reachable, as /metrics does, so that
// it can be read on a phone; its JSON twin is under /api.

// Status is the running alertd at one moment: what GET / shows and GET
// /api/v1/status returns.
type Status struct {
	Host    string         `json:"host"`
	At      time.Time      `json:"at"`
	Sources []StatusSource `json:"sources"`
	// Firing and Pending are newest first. A firing alert whose first
	// mail is held back says so in Held.
	Firing  []StatusAlert `json:"firing"`
	Pending []StatusAlert `json:"pending"`
	// Suppressed counts the mails held back since the start, by rule and
	// reason (alertd_notifications_suppressed_total), those not zero.
	Suppressed []StatusSuppressed `json:"suppressed"`
	Silences   []silence.Silence  `json:"silences"`
	Outbox     StatusOutbox       `json:"outbox"`
	Config     StatusConfig       `json:"config"`
	// Cluster is this instance's view of the cluster (store.backend:
	// nats); nil for a single alertd. The alerts and the outbox above are
	// then those of the partitions this instance owns.
	Cluster *StatusCluster `json:"cluster,omitempty"`
}

// StatusCluster is the instances sharing a JetStream cluster and who owns
// which partition, as `alertd cluster status` shows it.
type StatusCluster struct {
	Instance   string            `json:"instance"`
	Members    []string          `json:"members"`
	Stream     string            `json:"stream"`
	Messages   uint64            `json:"messages"` // readings stored, not yet acknowledged
	Partitions []StatusPartition `json:"partitions"`
	Error      string            `json:"error,omitempty"` // what could not be read
}

// StatusPartition is one partition's owner and lag (Pending + AckPending).
type StatusPartition struct {
	Partition  int    `json:"partition"`
	Owner      string `json:"owner,omitempty"` // empty while no instance holds it
	Term       uint64 `json:"term,omitempty"`
	Pending    uint64 `json:"pending"`
	AckPending int    `json:"ack_pending"`
}

// Owned is how many partitions this instance owns.
func (c *StatusCluster) Owned() int {
	n := 0
	for _, p := range c.Partitions {
		if p.Owner == c.Instance {
			n++
		}
	}
	return n
}

// Unowned is how many partitions no instance holds.
func (c *StatusCluster) Unowned() int {
	n := 0
	for _, p := range c.Partitions {
		if p.Owner == "" {
			n++
		}
	}
	return n
}

// StatusSource is one source of readings and its health.
type StatusSource struct {
	Name  string `json:"name"`
	Ready bool   `json:"ready"`
	Why   string `json:"why,omitempty"` // while not ready
}

// StatusAlert is one series firing or pending.
type StatusAlert struct {
	Rule     string `json:"rule"`
	Series   string `json:"series"` // the concrete topic
	Severity string `json:"severity,omitempty"`
	State    string `json:"state"` // firing or pending
	// Since is when the problem began: the first breaching reading, or
	// for a silence rule (Silent) the last reading.
	Since     time.Time `json:"since"`
	Silent    bool      `json:"silent,omitempty"`
	Field     string    `json:"field,omitempty"`
	Value     string    `json:"value,omitempty"`     // the last reading
	Threshold string    `json:"threshold,omitempty"` // the limit it crossed; silent_for for a silence rule
	LastSeen  time.Time `json:"last_seen,omitzero"`
	FiresAt   time.Time `json:"fires_at,omitzero"`  // pending: when for: ends
	LastMail  time.Time `json:"last_mail,omitzero"` // its last firing or reminder mail
	// Held is why its first mail has not gone out (silenced, cooldown,
	// rate_limit) and RetryAt when it is tried again. A firing alert with
	// neither LastMail nor Held was listed in its rule's summary mail.
	Held    string    `json:"held,omitempty"`
	RetryAt time.Time `json:"retry_at,omitzero"`
}

// StatusSuppressed is a count of alertd_notifications_suppressed_total.
type StatusSuppressed struct {
	Rule   string `json:"rule"`
	Reason string `json:"reason"`
	Count  uint64 `json:"count"`
}

// StatusOutbox is the mail queue: how much waits and why, and what died.
type StatusOutbox struct {
	Pending int       `json:"pending"`
	Oldest  time.Time `json:"oldest,omitzero"`
	// Of the oldest pending mail: its attempts so far, the next one and
	// the server's last answer.
	Attempts    int          `json:"attempts,omitempty"`
	NextAttempt time.Time    `json:"next_attempt,omitzero"`
	LastError   string       `json:"last_error,omitempty"`
	Dead        int          `json:"dead"`
	DeadLetters []StatusDead `json:"dead_letters"` // the last ones, newest first
	Unreadable  int          `json:"unreadable"`   // in quarantine (alertd outbox list)
	Error       string       `json:"error,omitempty"`
}

// StatusDead is a mail given up on, with the server's words.
type StatusDead struct {
	ID       uint64    `json:"id"`
	Rule     string    `json:"rule"`
	Series   string    `json:"series"`
	Subject  string    `json:"subject"`
	To       []string  `json:"to"`
	Attempts int       `json:"attempts"`
	DeadAt   time.Time `json:"dead_at"`
	Error    string    `json:"error"`
}

// StatusConfig is the configuration in force.
type StatusConfig struct {
	File  string `json:"file"`
	Rules int    `json:"rules"`
	// LoadedAt is the last successful load (the start or a reload).
	LoadedAt       time.Time `json:"loaded_at"`
	LastReloadOK   bool      `json:"last_reload_ok"`
	Reloads        int       `json:"reloads"`
	ReloadsRefused int       `json:"reloads_refused"`
}

// HeldBack is the firing alerts whose first mail is held back.
func (s *Status) HeldBack() []StatusAlert {
	var out []StatusAlert
	for _, a := range s.Firing {
		if a.Held != "" {
			out = append(out, a)
		}
	}
	return out
}

// SourcesReady reports whether every source is ready.
func (s *Status) SourcesReady() bool {
	for _, src := range s.Sources {
		if !src.Ready {
			return false
		}
	}
	return true
}

// normalize makes the JSON lists [] rather than null.
func (s *Status) normalize() {
	orEmpty(&s.Sources)
	orEmpty(&s.Firing)
	orEmpty(&s.Pending)
	orEmpty(&s.Suppressed)
	orEmpty(&s.Silences)
	orEmpty(&s.Outbox.DeadLetters)
	if s.Cluster != nil {
		orEmpty(&s.Cluster.Members)
		orEmpty(&s.Cluster.Partitions)
	}
}

func orEmpty[T any](s *[]T) {
	if *s == nil {
		*s = []T{}
	}
}

// RefreshSeconds is how often the page refreshes itself.
const RefreshSeconds = 10

// maxRows bounds each list on the page (the JSON has them all): a storm
// of a thousand alerts must not make a page a phone cannot render.
const maxRows = 200

//go:embed status
var statusFiles embed.FS

var statusPage = template.Must(template.New("status.html").ParseFS(statusFiles, "status/status.html"))

func routeStatus(mux *http.ServeMux, status func() Status) {
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		st := status()
		var buf bytes.Buffer
		if err := statusPage.Execute(&buf, &view{Status: st, Refresh: RefreshSeconds}); err != nil {
			http.Error(w, "render the status page: "+err.Error(), http.StatusInternalServerError)
			return
		}
		pageHeaders(w.Header())
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(buf.Bytes())
	})
	assets, _ := fs.Sub(statusFiles, "status")
	for _, name := range []string{"status.css", "status.js", "icon.svg"} {
		mux.Handle("GET /assets/"+name, asset(assets, name))
	}
	mux.HandleFunc("GET /api/v1/status", reader(func(w http.ResponseWriter, _ *http.Request) {
		st := status()
		st.normalize()
		writeJSON(w, st)
	}))
}

// pageHeaders forbid what the page never needs: inline or foreign
// scripts and styles, framing, sending the address on as a Referer, and
// caching a page that is only true now.
func pageHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "+
		"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}

// asset serves an embedded file with an ETag of its content, so a
// browser revalidates it cheaply and never keeps an older version.
func asset(fsys fs.FS, name string) http.Handler {
	data, err := fs.ReadFile(fsys, name)
	if err != nil {
		panic("httpapi: embedded asset " + name + ": " + err.Error())
	}
	sum := sha256.Sum256(data)
	etag := `"` + hex.EncodeToString(sum[:8]) + `"`
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", etag)
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(data))
	})
}

// view is the page's template data: the status and how to say its times.
type view struct {
	Status
	Refresh int
}

// Rows is at most maxRows of a list.
func (v *view) Rows(as []StatusAlert) []StatusAlert { return as[:min(len(as), maxRows)] }

// More is how many of a list the page leaves out.
func (v *view) More(as []StatusAlert) int { return max(len(as)-maxRows, 0) }

// Ago is how long before the status t was, as a person says it.
func (v *view) Ago(t time.Time) string { return Human(v.At.Sub(t)) }

// In is how long after the status t is: "in 5m", or "now".
func (v *view) In(t time.Time) string {
	if d := t.Sub(v.At); d > 0 {
		return "in " + Human(d)
	}
	return "now"
}

// Clock is t in the local zone: the time alone on the status's day,
// with the date otherwise.
func (v *view) Clock(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	t, at := t.Local(), v.At.Local()
	if y, m, d := t.Date(); y == at.Year() && m == at.Month() && d == at.Day() {
		return t.Format("15:04:05")
	}
	if t.Year() == at.Year() {
		return t.Format("Jan 2 15:04")
	}
	return t.Format("2006-01-02 15:04")
}

// ISO is t for a <time datetime> attribute.
func (v *view) ISO(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// Full is t with its date and zone, for a title attribute.
func (v *view) Full(t time.Time) string { return t.Local().Format("2006-01-02 15:04:05 MST") }

// HeldWhy says in words why a mail is held back (a Held reason).
func (v *view) HeldWhy(reason string) string {
	if reason == "rate_limit" {
		return "rate limit"
	}
	return reason
}

// Human is a duration as a person says it, to the second under an hour,
// to the minute under a day: 42s, 12m5s, 3h12m, 2d5h.
func Human(d time.Duration) string {
	switch d = max(d, 0).Round(time.Second); {
	case d < time.Minute:
		return strconv.Itoa(int(d/time.Second)) + "s"
	case d < time.Hour:
		return trimZero(strconv.Itoa(int(d/time.Minute))+"m", strconv.Itoa(int(d%time.Minute/time.Second))+"s")
	case d < 24*time.Hour:
		d = d.Round(time.Minute)
		return trimZero(strconv.Itoa(int(d/time.Hour))+"h", strconv.Itoa(int(d%time.Hour/time.Minute))+"m")
	}
	d = d.Round(time.Hour)
	return trimZero(strconv.Itoa(int(d/(24*time.Hour)))+"d", strconv.Itoa(int(d%(24*time.Hour)/time.Hour))+"h")
}

func trimZero(big, small string) string {
	if strings.HasPrefix(small, "0") {
		return big
	}
	return big + small
}

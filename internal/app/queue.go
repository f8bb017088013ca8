package app

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/httpapi"
	"github.com/alertd/alertd/internal/outbox"
	"github.com/alertd/alertd/internal/silence"
	"github.com/alertd/alertd/internal/store"
)

// Queue is the outbox as `alertd outbox` sees it: opened directly when the
// service is stopped, reached through its HTTP API when it runs.
type Queue interface {
	httpapi.Queue
	Close() error
}

// OpenQueue reaches cfg's outbox. via says how ("store FILE" or "running
// alertd at ADDR").
func OpenQueue(cfg *config.Config) (q Queue, via string, err error) {
	db, base, err := reach(cfg)
	switch {
	case err != nil:
		return nil, "", err
	case db != nil:
		return &directQueue{Outbox: outbox.New(db), db: db}, "store " + cfg.Store.Path, nil
	}
	return remoteQueue{newRemote(base)}, "running alertd at " + base, nil
}

// Silences is the silences as `alertd silence` sees them, like Queue.
type Silences interface {
	httpapi.Silences
	Close() error
}

// OpenSilences reaches cfg's silences, like OpenQueue.
func OpenSilences(cfg *config.Config) (s Silences, via string, err error) {
	db, base, err := reach(cfg)
	switch {
	case err != nil:
		return nil, "", err
	case db != nil:
		st, err := silence.Open(db, time.Now(), nil) // the listing shows what matters
		if err != nil {
			_ = db.Close()
			return nil, "", err
		}
		return &directSilences{silenceAdmin{st, func() []string { return ruleNames(cfg) }, nil}, db}, "store " + cfg.Store.Path, nil
	}
	return &remoteSilences{remote: newRemote(base)}, "running alertd at " + base, nil
}

func ruleNames(cfg *config.Config) []string {
	names := make([]string, 0, len(cfg.Rules))
	for _, r := range cfg.Rules {
		names = append(names, r.Name)
	}
	return names
}

// reach opens the store directly when no alertd holds it, else returns
// the base URL of the running alertd's HTTP API.
func reach(cfg *config.Config) (*store.DB, string, error) {
	if _, err := os.Stat(cfg.Store.Path); errors.Is(err, fs.ErrNotExist) {
		// alertd never ran here: a fresh store, as the service would make.
		db, _, err := store.Open(cfg.Store.Path)
		return db, "", err
	}
	db, err := store.OpenExisting(cfg.Store.Path, 200*time.Millisecond)
	var damage *store.Damage
	switch {
	case err == nil:
		return db, "", nil
	case errors.As(err, &damage):
		// Left to the service, which logs the recovery where the operator
		// looks for it, rather than done behind a command that only reads.
		return nil, "", fmt.Errorf("%w; alertd run moves it aside and starts a fresh store with what can be read of it (alertd store salvage does the same now)", err)
	case !errors.Is(err, store.ErrLocked):
		return nil, "", err
	}
	if cfg.HTTP.Listen == "" || cfg.HTTP.Listen == "off" {
		return nil, "", fmt.Errorf("alertd is running on %s and its http.listen is off: stop it, or enable http to manage it while it runs", cfg.Store.Path)
	}
	base, err := apiBase(cfg)
	return nil, base, err
}

// apiBase is the URL of the admin API of an alertd run with cfg.
func apiBase(cfg *config.Config) (string, error) {
	addr := cfg.HTTP.Listen
	if addr == "" || addr == "off" {
		return "", errors.New("http.listen is off: the running alertd cannot be reached (send it SIGHUP instead)")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("http.listen %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

// silenceAdmin validates silences against the configured rules.
type silenceAdmin struct {
	*silence.Store
	rules func() []string // the rules in force, for Validate
	// removed, when alertd runs, releases what the silence held back.
	removed func(rule string)
}

func (s silenceAdmin) Remove(id uint64) error {
	var rule string
	for _, si := range s.Store.List(time.Now()) {
		if si.ID == id {
			rule = si.Rule
		}
	}
	if err := s.Store.Remove(id); err != nil {
		return err
	}
	if s.removed != nil && rule != "" {
		s.removed(rule)
	}
	return nil
}

func (s silenceAdmin) Add(si silence.Silence) (silence.Silence, error) {
	now := time.Now()
	si.Created = now
	if err := si.Validate(s.rules(), now); err != nil {
		return silence.Silence{}, err
	}
	return s.Store.Add(si)
}

type directSilences struct {
	silenceAdmin
	db *store.DB
}

func (d *directSilences) Close() error { return d.db.Close() }

type directQueue struct {
	*outbox.Outbox
	db *store.DB
}

func (d *directQueue) Close() error { return d.db.Close() }

// remote is the running alertd's HTTP API.
type remote struct {
	base string
	c    *http.Client
}

func newRemote(base string) *remote {
	return &remote{base: base, c: &http.Client{Timeout: 10 * time.Second}}
}

func (r *remote) Close() error { return nil }

type remoteQueue struct{ *remote }

type remoteSilences struct {
	*remote
	err error
}

func (r remoteQueue) List() (pending, dead []*outbox.Entry, err error) {
	var l httpapi.Listing
	if err := r.do(http.MethodGet, "/api/v1/outbox", &l); err != nil {
		return nil, nil, err
	}
	return l.Pending, l.Dead, nil
}

// Unreadable asks again rather than keep List's answer: List has
// quarantined what it met by then, so the second answer has it.
func (r remoteQueue) Unreadable() ([]outbox.Unreadable, error) {
	var l httpapi.Listing
	if err := r.do(http.MethodGet, "/api/v1/outbox", &l); err != nil {
		return nil, err
	}
	return l.Unreadable, nil
}

func (r remoteQueue) Retry(id uint64, _ time.Time) error {
	return r.do(http.MethodPost, "/api/v1/outbox/"+strconv.FormatUint(id, 10)+"/retry", nil)
}

func (r remoteQueue) RetryAllDead(time.Time) (int, error) {
	var out struct {
		Retried int `json:"retried"`
	}
	err := r.do(http.MethodPost, "/api/v1/outbox/retry-dead", &out)
	return out.Retried, err
}

func (r remoteQueue) Drop(id uint64) error {
	return r.do(http.MethodDelete, "/api/v1/outbox/"+strconv.FormatUint(id, 10), nil)
}

func (r *remoteSilences) List(time.Time) []silence.Silence {
	var out []silence.Silence
	if err := r.do(http.MethodGet, "/api/v1/silences", &out); err != nil {
		r.err = err
	}
	return out
}

func (r *remoteSilences) Add(si silence.Silence) (silence.Silence, error) {
	body, err := json.Marshal(si)
	if err != nil {
		return silence.Silence{}, err
	}
	var out silence.Silence
	err = r.doBody(http.MethodPost, "/api/v1/silences", bytes.NewReader(body), &out)
	return out, err
}

func (r *remoteSilences) Remove(id uint64) error {
	return r.do(http.MethodDelete, "/api/v1/silences/"+strconv.FormatUint(id, 10), nil)
}

// Err is the error of the last List over HTTP, which has no error result.
func (r *remoteSilences) Err() error { return r.err }

func (r *remote) do(method, path string, out any) error {
	return r.doBody(method, path, nil, out)
}

func (r *remote) doBody(method, path string, body io.Reader, out any) error {
	req, err := http.NewRequest(method, r.base+path, body)
	if err != nil {
		return err
	}
	if method != http.MethodGet {
		req.Header.Set(httpapi.AdminHeader, "1")
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := r.c.Do(req)
	if err != nil {
		return fmt.Errorf("alertd is running but its HTTP API did not answer: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	switch {
	case resp.StatusCode == http.StatusNotFound && bytes.Contains(data, []byte(outbox.ErrNotFound.Error())):
		return outbox.ErrNotFound
	case resp.StatusCode == http.StatusNotFound && bytes.Contains(data, []byte(silence.ErrNotFound.Error())):
		return silence.ErrNotFound
	case resp.StatusCode == http.StatusConflict && bytes.Contains(data, []byte(outbox.ErrUnreadable.Error())):
		return fmt.Errorf("%s: %w", strings.TrimSuffix(strings.TrimSpace(string(data)), ": "+outbox.ErrUnreadable.Error()), outbox.ErrUnreadable)
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("alertd answered %s: %s", resp.Status, strings.TrimSpace(string(data)))
	case out != nil:
		return json.Unmarshal(data, out)
	}
	return nil
}

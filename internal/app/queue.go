package app

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/httpapi"
	"github.com/alertd/alertd/internal/outbox"
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
	db, err := store.OpenExisting(cfg.Store.Path, 200*time.Millisecond)
	switch {
	case err == nil:
		return &directQueue{Outbox: outbox.New(db), db: db}, "store " + cfg.Store.Path, nil
	case !errors.Is(err, store.ErrLocked):
		return nil, "", err
	}
	addr := cfg.HTTP.Listen
	if addr == "" || addr == "off" {
		return nil, "", fmt.Errorf("alertd is running on %s and its http.listen is off: stop it, or enable http to manage the queue while it runs", cfg.Store.Path)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, "", fmt.Errorf("http.listen %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	base := "http://" + net.JoinHostPort(host, port)
	return &remoteQueue{base: base, c: &http.Client{Timeout: 10 * time.Second}}, "running alertd at " + base, nil
}

type directQueue struct {
	*outbox.Outbox
	db *bolt.DB
}

func (d *directQueue) Close() error { return d.db.Close() }

type remoteQueue struct {
	base string
	c    *http.Client
}

func (r *remoteQueue) Close() error { return nil }

func (r *remoteQueue) List() (pending, dead []*outbox.Entry, err error) {
	var l httpapi.Listing
	if err := r.do(http.MethodGet, "/api/v1/outbox", &l); err != nil {
		return nil, nil, err
	}
	return l.Pending, l.Dead, nil
}

func (r *remoteQueue) Retry(id uint64, _ time.Time) error {
	return r.do(http.MethodPost, "/api/v1/outbox/"+strconv.FormatUint(id, 10)+"/retry", nil)
}

func (r *remoteQueue) RetryAllDead(time.Time) (int, error) {
	var out struct {
		Retried int `json:"retried"`
	}
	err := r.do(http.MethodPost, "/api/v1/outbox/retry-dead", &out)
	return out.Retried, err
}

func (r *remoteQueue) Drop(id uint64) error {
	return r.do(http.MethodDelete, "/api/v1/outbox/"+strconv.FormatUint(id, 10), nil)
}

func (r *remoteQueue) do(method, path string, out any) error {
	req, err := http.NewRequest(method, r.base+path, nil)
	if err != nil {
		return err
	}
	resp, err := r.c.Do(req)
	if err != nil {
		return fmt.Errorf("alertd is running but its HTTP API did not answer: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	switch {
	case resp.StatusCode == http.StatusNotFound && bytes.Contains(body, []byte(outbox.ErrNotFound.Error())):
		return outbox.ErrNotFound
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("alertd answered %s: %s", resp.Status, strings.TrimSpace(string(body)))
	case out != nil:
		return json.Unmarshal(body, out)
	}
	return nil
}

// Package adminclient is the alertd command's side of the running
// service's loopback admin API (package httpapi): the outbox, the
// silences, reload and status, for when the service holds the store.
package adminclient

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

	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/httpapi"
	"github.com/alertd/alertd/internal/outbox"
	"github.com/alertd/alertd/internal/silence"
)

// APIBase is the URL of the admin API of an alertd run with cfg.
func APIBase(cfg *config.Config) (string, error) {
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

// Client is the running alertd's admin API.
type Client struct {
	base string
	c    *http.Client
}

func New(base string) *Client {
	return &Client{base: base, c: &http.Client{Timeout: 10 * time.Second}}
}

func (r *Client) Close() error { return nil }

// Queue is the outbox of the running alertd.
type Queue struct{ *Client }

// Silences are the silences of the running alertd.
type Silences struct {
	*Client
	err error
}

func (r Queue) List() (pending, dead []*outbox.Entry, err error) {
	var l httpapi.Listing
	if err := r.do(http.MethodGet, "/api/v1/outbox", &l); err != nil {
		return nil, nil, err
	}
	return l.Pending, l.Dead, nil
}

// Unreadable asks again rather than keep List's answer: List has
// quarantined what it met by then, so the second answer has it.
func (r Queue) Unreadable() ([]outbox.Unreadable, error) {
	var l httpapi.Listing
	if err := r.do(http.MethodGet, "/api/v1/outbox", &l); err != nil {
		return nil, err
	}
	return l.Unreadable, nil
}

func (r Queue) Retry(id uint64, _ time.Time) error {
	return r.do(http.MethodPost, "/api/v1/outbox/"+strconv.FormatUint(id, 10)+"/retry", nil)
}

func (r Queue) RetryAllDead(time.Time) (int, error) {
	var out struct {
		Retried int `json:"retried"`
	}
	err := r.do(http.MethodPost, "/api/v1/outbox/retry-dead", &out)
	return out.Retried, err
}

func (r Queue) Drop(id uint64) error {
	return r.do(http.MethodDelete, "/api/v1/outbox/"+strconv.FormatUint(id, 10), nil)
}

func (r *Silences) List(time.Time) []silence.Silence {
	var out []silence.Silence
	if err := r.do(http.MethodGet, "/api/v1/silences", &out); err != nil {
		r.err = err
	}
	return out
}

func (r *Silences) Add(si silence.Silence) (silence.Silence, error) {
	body, err := json.Marshal(si)
	if err != nil {
		return silence.Silence{}, err
	}
	var out silence.Silence
	err = r.doBody(http.MethodPost, "/api/v1/silences", bytes.NewReader(body), &out)
	return out, err
}

func (r *Silences) Remove(id uint64) error {
	return r.do(http.MethodDelete, "/api/v1/silences/"+strconv.FormatUint(id, 10), nil)
}

// Err is the error of the last List over HTTP, which has no error result.
func (r *Silences) Err() error { return r.err }

func (r *Client) do(method, path string, out any) error {
	return r.doBody(method, path, nil, out)
}

func (r *Client) doBody(method, path string, body io.Reader, out any) error {
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

// ErrNotRunning means no alertd holds the configured store: there is
// nothing to reload.
var ErrNotRunning = errors.New("alertd is not running")

// ReloadRefused is the running alertd's answer to a reload it refused:
// every problem, as FILE:LINE:COL: message lines.
type ReloadRefused struct{ Errors []string }

func (e *ReloadRefused) Error() string { return strings.Join(e.Errors, "\n") }

// RequestReload asks the alertd running on cfg's store to re-read its
// configuration file, over its loopback HTTP API.
func RequestReload(cfg *config.Config) (httpapi.ReloadReport, error) {
	var rep httpapi.ReloadReport
	// The service is found where the file says its API listens, not by
	// its store: a file that moves the store is for the service to refuse.
	base, err := APIBase(cfg)
	if err != nil {
		return rep, err
	}
	req, err := http.NewRequest(http.MethodPost, base+"/api/v1/reload", nil)
	if err != nil {
		return rep, err
	}
	req.Header.Set(httpapi.AdminHeader, "1")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return rep, fmt.Errorf("%w at %s (http.listen), or it does not answer: %v", ErrNotRunning, base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return rep, err
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return rep, json.Unmarshal(data, &rep)
	case http.StatusUnprocessableEntity:
		if err := json.Unmarshal(data, &rep); err != nil {
			return rep, err
		}
		return rep, &ReloadRefused{Errors: rep.Errors}
	}
	return rep, fmt.Errorf("alertd answered %s: %s", resp.Status, strings.TrimSpace(string(data)))
}

package httpin

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Log keys, declared once.
const (
	keyMethod = "method"
	keyURL    = "url" // always redacted
	keyStatus = "status"
	keyResult = "result"
	keyClient = "client"
	keyReason = "reason"
	keyErr    = "err"
)

// refusal is a request alertd does not take, and how it says so.
type refusal struct {
	status     int
	result     string
	msg        string        // one line for the device
	allow      string        // the Allow header of a 405
	retryAfter time.Duration // the Retry-After header of a 429
}

func (e *refusal) Error() string { return e.msg }

func badRequest(msg string) *refusal {
	return &refusal{status: http.StatusBadRequest, result: ResultBadRequest, msg: msg}
}

var errUnauthorized = &refusal{
	status: http.StatusUnauthorized, result: ResultUnauthorized,
	msg: "a valid token is required (Authorization: Bearer <token>)",
}

// accepted is the body of a 202.
type accepted struct {
	ID        string   `json:"id"`
	IDs       []string `json:"ids,omitempty"` // one per alert of a webhook
	Duplicate bool     `json:"duplicate,omitempty"`
}

// ServeHTTP answers every request of the listener.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	// Nothing here may be cached: a GET carries a reading, not a resource.
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	reply, err := s.serve(w, r)
	s.answer(w, r, reply, err)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) (*accepted, error) {
	handle, err := route(r)
	if err != nil {
		return nil, err
	}
	if !s.auth.allows(r) {
		return nil, errUnauthorized
	}
	return handle(s, w, r)
}

type handler func(s *Server, w http.ResponseWriter, r *http.Request) (*accepted, error)

const eventsPath = "/v1/events"

func route(r *http.Request) (handler, error) {
	var h handler
	allow := []string{http.MethodPost}
	switch p := r.URL.Path; {
	case p == eventsPath || strings.HasPrefix(p, eventsPath+"/"):
		h, allow = (*Server).event, []string{http.MethodGet, http.MethodPost}
	case p == "/v1/mail":
		h = (*Server).mail
	case p == "/v1/alertmanager":
		h = (*Server).alertmanager
	default:
		return nil, &refusal{status: http.StatusNotFound, result: ResultBadRequest,
			msg: "no such endpoint: use /v1/events/<topic>, /v1/mail or /v1/alertmanager"}
	}
	if !slices.Contains(allow, r.Method) {
		methods := strings.Join(allow, ", ")
		return nil, &refusal{status: http.StatusMethodNotAllowed, result: ResultBadRequest,
			msg: "method not allowed here: use " + methods, allow: methods}
	}
	return h, nil
}

// answer writes the one answer a request gets, counts and logs it.
func (s *Server) answer(w http.ResponseWriter, r *http.Request, reply *accepted, err error) {
	status, result, body := http.StatusAccepted, ResultAccepted, any(reply)
	var ref *refusal
	if err != nil && !errors.As(err, &ref) {
		// Sink errors are turned into refusals by commit; this is a bug.
		ref = &refusal{status: http.StatusServiceUnavailable, result: ResultError, msg: "internal error: retry later"}
	}
	if ref != nil {
		status, result, body = ref.status, ref.result, map[string]string{"error": ref.msg}
		s.headers(w, ref)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // "<topic>" reads better in a terminal than "\u003ctopic\u003e"
	_ = enc.Encode(body)
	s.count(result)
	attrs := []any{keyMethod, r.Method, keyURL, redactURL(r.URL), keyStatus, status, keyResult, result, keyClient, r.RemoteAddr}
	if ref != nil {
		attrs = append(attrs, keyReason, ref.msg)
	}
	s.log.Debug("device request", attrs...)
}

func (s *Server) headers(w http.ResponseWriter, ref *refusal) {
	h := w.Header()
	switch ref.status {
	case http.StatusUnauthorized:
		h.Set("WWW-Authenticate", `Bearer realm="alertd"`)
	case http.StatusMethodNotAllowed:
		h.Set("Allow", ref.allow)
	case http.StatusTooManyRequests:
		h.Set("Retry-After", strconv.FormatInt(retrySeconds(ref.retryAfter), 10))
	}
}

// retrySeconds rounds up: a device retrying early is held again.
func retrySeconds(d time.Duration) int64 {
	return max(1, int64((d+time.Second-1)/time.Second))
}

// commit runs one Sink call under the commit timeout and turns its error
// into the device's answer: 429 for a rate limit, 503 for anything else.
// The Sink's own words go to the log, not to the device.
func (s *Server) commit(r *http.Request, call func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(r.Context(), s.commitTimeout)
	defer cancel()
	err := call(ctx)
	var limited *RateLimitedError
	switch {
	case err == nil:
		s.fails.recovered()
		return nil
	case errors.As(err, &limited):
		return &refusal{status: http.StatusTooManyRequests, result: ResultRateLimited,
			msg: "rate limited: retry later", retryAfter: limited.RetryAfter}
	case r.Context().Err() != nil:
		s.log.Debug("device hung up before the commit ended", keyClient, r.RemoteAddr, keyErr, err)
	default:
		s.fails.failed(err)
	}
	return &refusal{status: http.StatusServiceUnavailable, result: ResultError,
		msg: "alertd could not commit the request: retry later"}
}

// failLog logs a Sink failure when it differs from the last one and once
// when the Sink works again, not on every device's retry.
type failLog struct {
	log  *slog.Logger
	mu   sync.Mutex
	last string
}

func (f *failLog) failed(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if msg := err.Error(); msg != f.last {
		f.last = msg
		f.log.Warn("device request not committed", keyErr, err)
	}
}

func (f *failLog) recovered() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.last != "" {
		f.last = ""
		f.log.Info("device requests committed again")
	}
}

// pathToken finds a token written into a path ("/v1/events/x/token=...").
var pathToken = regexp.MustCompile(`(?i)token(=|%3d)[^/]*`)

// redactURL is u fit for a log: every token query parameter (however its
// name is escaped) and anything that looks like one in the path replaced.
func redactURL(u *url.URL) string {
	path := pathToken.ReplaceAllString(u.EscapedPath(), "token=REDACTED")
	if u.RawQuery == "" {
		return path
	}
	parts := strings.Split(u.RawQuery, "&")
	for i, p := range parts {
		k, _, _ := strings.Cut(p, "=")
		if name, err := url.QueryUnescape(k); err != nil || strings.EqualFold(name, "token") || pathToken.MatchString(p) {
			parts[i] = "token=REDACTED"
		}
	}
	return path + "?" + strings.Join(parts, "&")
}

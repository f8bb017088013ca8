package httpin

import (
	"context"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/alertd/alertd/internal/event"
	"github.com/alertd/alertd/internal/topic"
)

// Source is the Event.Source of everything this listener receives.
const Source = "http"

// MaxTopic is the longest topic alertd tracks (the pipeline drops longer
// ones from MQTT too): a series key must fit bbolt and a mail header.
const MaxTopic = 1024

// event serves GET and POST /v1/events/<topic>.
func (s *Server) event(w http.ResponseWriter, r *http.Request) (*accepted, error) {
	t, err := eventTopic(r.URL.Path)
	if err != nil {
		return nil, err
	}
	payload, err := s.eventPayload(w, r)
	if err != nil {
		return nil, err
	}
	ev := &event.Event{Source: Source, Topic: t, Payload: payload, Received: s.now()}
	var id string
	err = s.commit(r, func(ctx context.Context) (err error) {
		id, err = s.sink.Event(ctx, ev)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &accepted{ID: id}, nil
}

// eventTopic is the rest of the (already percent-decoded) path.
func eventTopic(path string) (string, error) {
	t, ok := strings.CutPrefix(path, eventsPath+"/")
	if !ok || t == "" {
		return "", badRequest("topic missing: use /v1/events/<topic>")
	}
	if err := validTopic(t); err != nil {
		return "", badRequest("bad topic: " + err.Error())
	}
	return t, nil
}

// validTopic accepts what an MQTT client could publish on and alertd
// would track, minus what an HTTP path cannot carry faithfully.
func validTopic(t string) error {
	if len(t) > MaxTopic {
		return fmt.Errorf("longer than %d bytes", MaxTopic)
	}
	if err := topic.ValidateName(t); err != nil {
		return err
	}
	if strings.ContainsAny(t, "\r\n") {
		return fmt.Errorf("must not contain CR or LF")
	}
	if strings.HasPrefix(t, "/") {
		return fmt.Errorf("must not start with an empty level")
	}
	for l := range strings.SplitSeq(t, "/") {
		if l == "." || l == ".." {
			// HTTP clients and proxies remove dot segments (RFC 3986
			// section 5.2.4): the topic alertd sees would depend on them.
			return fmt.Errorf("levels %q and %q are refused", ".", "..")
		}
	}
	return nil
}

// eventPayload turns the request into the bytes a rule reads.
func (s *Server) eventPayload(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.Method == http.MethodGet {
		return queryObject(r.URL.RawQuery)
	}
	kind, err := contentType(r)
	if err != nil {
		return nil, err
	}
	body, err := s.readBody(w, r)
	if err != nil {
		return nil, err
	}
	switch kind {
	case kindJSON:
		return body, checkJSON(body)
	case kindForm:
		return formObject(string(body))
	default:
		if !utf8.Valid(body) {
			return nil, badRequest("body is not valid UTF-8")
		}
		return body, nil
	}
}

type bodyKind int

const (
	kindJSON bodyKind = iota
	kindForm
	kindText
)

// unsupported answers a body of a type the endpoint does not read.
func unsupported(types string) *refusal {
	return &refusal{status: http.StatusUnsupportedMediaType, result: ResultUnsupported,
		msg: "Content-Type must be " + types + " (charset utf-8)"}
}

var errUnsupported = unsupported("application/json, application/x-www-form-urlencoded or text/plain")

// contentType reads the Content-Type a body must have. A charset other
// than UTF-8 (or its subset ASCII) is refused rather than misread.
func contentType(r *http.Request) (bodyKind, error) {
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		return 0, errUnsupported
	}
	var kind bodyKind
	switch {
	case mt == "application/json" || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"):
		kind = kindJSON
	case mt == "application/x-www-form-urlencoded":
		return kindForm, nil // percent-escaped: its charset is UTF-8 by definition
	case mt == "text/plain":
		kind = kindText
	default:
		return 0, errUnsupported
	}
	switch cs, ok := params["charset"]; {
	case !ok, strings.EqualFold(cs, "utf-8"), strings.EqualFold(cs, "us-ascii"):
		return kind, nil
	}
	return 0, errUnsupported
}

package httpin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/mail"
	"net/netip"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Bounds on a device's mail.
const (
	// MaxRecipients bounds one mail's To: a device alerts a few people; a
	// long list is a mistake or abuse.
	MaxRecipients = 20
	// MaxSubject is in runes: a subject that long is already cut by most
	// mail clients' lists.
	MaxSubject = 200
	// MaxText bounds the text whatever max_body_bytes says: a device's
	// message is a few lines.
	MaxText = 64 << 10
)

// mailRequest is the body of POST /v1/mail.
type mailRequest struct {
	To      recipients `json:"to"`
	Subject string     `json:"subject"`
	Text    string     `json:"text"`
}

// recipients is a JSON list of addresses or a comma-separated string.
type recipients []string

func (rs *recipients) UnmarshalJSON(b []byte) error {
	var one string
	if json.Unmarshal(b, &one) == nil {
		*rs = recipients{one}
		return nil
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		return errors.New(`"to" must be a list of addresses or a comma-separated string`)
	}
	*rs = list
	return nil
}

// mail serves POST /v1/mail.
func (s *Server) mail(w http.ResponseWriter, r *http.Request) (*accepted, error) {
	kind, err := contentType(r)
	if err != nil || kind == kindText {
		return nil, unsupported("application/json or application/x-www-form-urlencoded")
	}
	body, err := s.readBody(w, r)
	if err != nil {
		return nil, err
	}
	req, err := decodeMail(kind, body)
	if err != nil {
		return nil, err
	}
	m, err := s.buildMail(r, req)
	if err != nil {
		return nil, err
	}
	var out Outcome
	err = s.commit(r, func(ctx context.Context) (err error) {
		out, err = s.sink.Mail(ctx, m)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &accepted{ID: out.ID, Duplicate: out.Duplicate}, nil
}

func decodeMail(kind bodyKind, body []byte) (*mailRequest, error) {
	if kind == kindForm {
		return formMail(string(body))
	}
	if err := checkJSON(body); err != nil {
		return nil, err // also refuses a second JSON value after the first
	}
	var req mailRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields() // "body" for "text" must not send an empty mail
	if err := dec.Decode(&req); err != nil {
		return nil, badRequest("bad mail: " + err.Error())
	}
	return &req, nil
}

// formMail reads to=a@x,b@y&to=c@z&subject=...&text=...
func formMail(body string) (*mailRequest, error) {
	vals, err := url.ParseQuery(body)
	if err != nil {
		return nil, badRequest("bad form encoding: " + err.Error())
	}
	req := &mailRequest{To: vals["to"]}
	for k, vs := range vals {
		switch k {
		case "to", "token":
		case "subject", "text":
			if len(vs) > 1 {
				return nil, badRequest(fmt.Sprintf("form field %q given %d times", k, len(vs)))
			}
		default:
			return nil, badRequest(fmt.Sprintf("unknown form field %q: use to, subject and text", short(k)))
		}
	}
	req.Subject, req.Text = vals.Get("subject"), vals.Get("text")
	return req, nil
}

// buildMail checks the recipients against relay_to and cleans the text.
func (s *Server) buildMail(r *http.Request, req *mailRequest) (*Mail, error) {
	if !utf8.ValidString(req.Subject) || !utf8.ValidString(req.Text) || !utf8.ValidString(strings.Join(req.To, "")) {
		return nil, badRequest("mail is not valid UTF-8")
	}
	to, err := s.recipients(req.To)
	if err != nil {
		return nil, err
	}
	m := &Mail{To: to, Subject: cleanSubject(req.Subject), Text: cleanText(req.Text)}
	switch {
	case len(m.Text) > MaxText:
		return nil, badRequest(fmt.Sprintf("text longer than %d bytes", MaxText))
	case m.Subject == "" && strings.TrimSpace(m.Text) == "":
		return nil, badRequest("subject and text are both empty")
	}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		m.Client = ap.Addr().Unmap()
	}
	return m, nil
}

// recipients parses the list and refuses it whole if any address is not
// allowed: a mail goes to all its recipients or to none.
func (s *Server) recipients(list []string) ([]string, error) {
	joined := strings.Join(list, ",")
	if strings.TrimSpace(strings.ReplaceAll(joined, ",", "")) == "" {
		return nil, badRequest(`no recipient: set "to"`)
	}
	addrs, err := mail.ParseAddressList(joined)
	if err != nil {
		return nil, badRequest("bad recipient list: " + err.Error())
	}
	var to []string
	seen := map[string]bool{}
	for _, a := range addrs {
		if !s.relay.allows(a.Address) {
			return nil, &refusal{status: http.StatusForbidden, result: ResultForbidden,
				msg: fmt.Sprintf("recipient %q is not allowed by ingress.relay_to", short(a.Address))}
		}
		if key := strings.ToLower(a.Address); !seen[key] {
			seen[key] = true
			to = append(to, a.Address)
		}
	}
	if len(to) > MaxRecipients {
		return nil, badRequest(fmt.Sprintf("more than %d recipients", MaxRecipients))
	}
	return to, nil
}

// cleanSubject makes the subject one line: every run of control
// characters (CR and LF included: no header injection) becomes one space.
func cleanSubject(s string) string {
	var b strings.Builder
	space := false
	for _, r := range s {
		if isControl(r) || unicode.IsSpace(r) {
			space = true
			continue
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		b.WriteRune(r)
	}
	return cutRunes(b.String(), MaxSubject)
}

// cleanText keeps lines and tabs, with LF line ends, and drops every other
// control character.
func cleanText(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	return strings.Map(func(r rune) rune {
		if r != '\n' && r != '\t' && isControl(r) {
			return -1
		}
		return r
	}, s)
}

// isControl is C0, DEL, C1, and the Unicode line and paragraph separators
// some mail clients break lines at.
func isControl(r rune) bool {
	return unicode.IsControl(r) || r == '\u2028' || r == '\u2029'
}

func cutRunes(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

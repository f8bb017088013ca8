package dryrun

import (
	"bytes"
	"io"
	"strings"

	"github.com/emersion/go-message/mail"
)

// firstHeaders are printed first, in this order, when a mail is shown
// decoded; the others follow in the order the mail has them.
var firstHeaders = []string{"From", "To", "Subject", "Date", "Message-Id", "In-Reply-To", "References"}

// printMail writes msg indented: decoded (RFC 2047 headers, the
// quoted-printable body as text), or as queued with Options.Raw.
func (r *run) printMail(msg []byte) {
	text := string(msg)
	if !r.o.Raw {
		if dec, err := decoded(msg); err == nil {
			text = dec
		}
	}
	for _, l := range strings.Split(strings.TrimRight(strings.ReplaceAll(text, "\r\n", "\n"), "\n"), "\n") {
		r.printf("      | %s\n", l)
	}
}

func decoded(msg []byte) (string, error) {
	mr, err := mail.CreateReader(bytes.NewReader(msg))
	if err != nil {
		return "", err
	}
	defer mr.Close()
	var b strings.Builder
	h := mr.Header
	for _, k := range firstHeaders {
		if v, err := h.Text(k); err == nil && v != "" {
			b.WriteString(k + ": " + v + "\n")
		}
	}
	fields := h.Fields()
	for fields.Next() {
		k := fields.Key()
		if containsFold(firstHeaders, k) {
			continue
		}
		v, err := fields.Text()
		if err != nil {
			v = fields.Value()
		}
		b.WriteString(k + ": " + v + "\n")
	}
	b.WriteString("\n")
	p, err := mr.NextPart()
	if err != nil {
		return "", err
	}
	body, err := io.ReadAll(p.Body)
	if err != nil {
		return "", err
	}
	b.Write(body)
	return b.String(), nil
}

func containsFold(list []string, s string) bool {
	for _, l := range list {
		if strings.EqualFold(l, s) {
			return true
		}
	}
	return false
}

package httpin

import (
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestMailAllowed(t *testing.T) {
	for _, tc := range []struct {
		name, contentType, body string
		want                    Mail
	}{
		{"JSON list", "application/json",
			`{"to":["ops@example.org","Night Shift <night@example.net>"],"subject":"Greenhouse","text":"too hot"}`,
			Mail{To: []string{"ops@example.org", "night@example.net"}, Subject: "Greenhouse", Text: "too hot"}},
		{"JSON string, mixed case", "application/json",
			`{"to":"OPS@Example.ORG, a@EXAMPLE.net","subject":"s"}`,
			Mail{To: []string{"OPS@Example.ORG", "a@EXAMPLE.net"}, Subject: "s"}},
		{"form, comma-separated and repeated, duplicates dropped", "application/x-www-form-urlencoded",
			"to=ops%40example.org%2Ca%40example.net&to=ops@example.org&subject=Door&text=open%0D%0Asince+10%3A02",
			Mail{To: []string{"ops@example.org", "a@example.net"}, Subject: "Door", Text: "open\nsince 10:02"}},
		{"form with the token in it", "application/x-www-form-urlencoded",
			"to=ops@example.org&text=hi&token=whatever",
			Mail{To: []string{"ops@example.org"}, Text: "hi"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := start(t, Options{}, nil)
			ts.post(t, "/v1/mail", tc.contentType, tc.body).wantAccepted(t)
			_, mails := ts.sink.recorded()
			if len(mails) != 1 {
				t.Fatalf("%d mails, want 1", len(mails))
			}
			m := mails[0]
			if !slices.Equal(m.To, tc.want.To) || m.Subject != tc.want.Subject || m.Text != tc.want.Text {
				t.Errorf("mail = %+v, want %+v", *m, tc.want)
			}
			if m.Client != netip.MustParseAddr("127.0.0.1") {
				t.Errorf("client = %v, want 127.0.0.1", m.Client)
			}
		})
	}
}

func TestMailRefused(t *testing.T) {
	ts := start(t, Options{}, nil)
	for _, tc := range []struct {
		name, contentType, body string
		status                  int
		err                     string
	}{
		{"outside relay_to", "application/json", `{"to":["boss@gmail.com"],"text":"x"}`, 403, `"boss@gmail.com" is not allowed`},
		{"one of two outside", "application/json", `{"to":["ops@example.org","x@evil.example"],"text":"x"}`, 403, "not allowed"},
		{"another address at an allowed address's domain", "application/json", `{"to":["ceo@example.org"],"text":"x"}`, 403, "not allowed"},
		{"a subdomain of an allowed domain", "application/json", `{"to":["a@sub.example.net"],"text":"x"}`, 403, "not allowed"},
		{"an allowed domain as a prefix", "application/json", `{"to":["a@example.net.evil.example"],"text":"x"}`, 403, "not allowed"},
		{"form outside relay_to", "application/x-www-form-urlencoded", "to=a@example.net,b@gmail.com&text=x", 403, "not allowed"},
		{"injected header as an address", "application/json", `{"to":"ops@example.org\r\nBcc: x@evil.example","text":"x"}`, 400, "bad recipient"},
		{"no recipient", "application/json", `{"subject":"s"}`, 400, "no recipient"},
		{"empty recipients", "application/x-www-form-urlencoded", "to=,,&subject=s", 400, "no recipient"},
		{"not an address", "application/json", `{"to":["ops"],"text":"x"}`, 400, "bad recipient"},
		{"to as a number", "application/json", `{"to":5,"text":"x"}`, 400, `"to" must be`},
		{"unknown field", "application/json", `{"to":["ops@example.org"],"body":"x"}`, 400, `unknown field "body"`},
		{"two JSON values", "application/json", `{"to":["ops@example.org"],"text":"x"}{}`, 400, "not valid JSON"},
		{"unknown form field", "application/x-www-form-urlencoded", "to=ops@example.org&body=x", 400, `unknown form field "body"`},
		{"subject twice", "application/x-www-form-urlencoded", "to=ops@example.org&subject=a&subject=b", 400, "given 2 times"},
		{"empty", "application/json", `{"to":["ops@example.org"],"subject":" \r\n","text":" "}`, 400, "both empty"},
		{"invalid UTF-8", "application/x-www-form-urlencoded", "to=ops@example.org&text=%FF", 400, "UTF-8"},
		{"text/plain", "text/plain", "hello", 415, "Content-Type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts.post(t, "/v1/mail", tc.contentType, tc.body).wantError(t, tc.status, tc.err)
		})
	}
	if _, mails := ts.sink.recorded(); len(mails) != 0 {
		t.Errorf("refused mails reached the sink: %+v", mails)
	}
	if n := ts.results.get(ResultForbidden); n != 6 {
		t.Errorf("forbidden counted %d times, want 6", n)
	}
}

func TestMailTooManyRecipients(t *testing.T) {
	ts := start(t, Options{}, nil)
	var to []string
	for i := range MaxRecipients + 1 {
		to = append(to, "r"+string(rune('a'+i))+"@example.net")
	}
	ts.post(t, "/v1/mail", "application/x-www-form-urlencoded", "text=x&to="+strings.Join(to, ",")).
		wantError(t, http.StatusBadRequest, "more than 20 recipients")
}

func TestMailCleaning(t *testing.T) {
	ts := start(t, Options{}, nil)
	long := strings.Repeat("é", MaxSubject+10)
	ts.post(t, "/v1/mail", "application/json",
		`{"to":"ops@example.org","subject":"Hot\r\nBcc: x@evil.example\u0000\u2028 now","text":"a\r\nb\rc\u0007\td"}`).wantAccepted(t)
	ts.post(t, "/v1/mail", "application/json", `{"to":"ops@example.org","subject":"`+long+`"}`).wantAccepted(t)
	_, mails := ts.sink.recorded()
	if got := mails[0].Subject; got != "Hot Bcc: x@evil.example now" {
		t.Errorf("subject = %q: must be one line without control characters", got)
	}
	if got := mails[0].Text; got != "a\nb\nc\td" {
		t.Errorf("text = %q, want LF line ends, tabs kept, other control characters dropped", got)
	}
	if got := []rune(mails[1].Subject); len(got) != MaxSubject || got[len(got)-1] != '…' {
		t.Errorf("a long subject is %d runes, want %d ending in …", len(got), MaxSubject)
	}
}

func TestMailOutcomes(t *testing.T) {
	t.Run("duplicate", func(t *testing.T) {
		ts := start(t, Options{}, &recordingSink{outcome: Outcome{ID: "m-7", Duplicate: true}})
		a := ts.post(t, "/v1/mail", "application/json", `{"to":"ops@example.org","text":"x"}`)
		a.wantAccepted(t)
		if a.body["id"] != "m-7" || a.body["duplicate"] != true {
			t.Errorf("body = %s", a.raw)
		}
	})
	t.Run("rate limited", func(t *testing.T) {
		ts := start(t, Options{}, &recordingSink{err: &RateLimitedError{RetryAfter: 10 * time.Minute}})
		a := ts.post(t, "/v1/mail", "application/json", `{"to":"ops@example.org","text":"x"}`)
		a.wantError(t, http.StatusTooManyRequests, "rate limited")
		if ra := a.header.Get("Retry-After"); ra != "600" {
			t.Errorf("Retry-After = %q, want 600", ra)
		}
		if ts.results.get(ResultRateLimited) != 1 {
			t.Error("not counted as rate_limited")
		}
	})
	t.Run("fails", func(t *testing.T) {
		ts := start(t, Options{}, &recordingSink{err: errorString("outbox closed")})
		ts.post(t, "/v1/mail", "application/json", `{"to":"ops@example.org","text":"x"}`).
			wantError(t, http.StatusServiceUnavailable, "retry")
	})
}

func TestRelayToOptions(t *testing.T) {
	for _, bad := range []string{"@", "@exa mple.org", "nobody", "@.example.org", "a@b@c"} {
		if _, err := newRelayTo([]string{bad}); err == nil {
			t.Errorf("relay_to %q accepted", bad)
		}
	}
	r, err := newRelayTo([]string{"Ops <OPS@example.org>", "@Example.NET"})
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]bool{
		"ops@example.org": true, "ops@EXAMPLE.org": true, "x@example.net": true, `"a@b"@example.net`: true,
		"x@example.org": false, "x@sub.example.net": false, "x@example.net.org": false, "example.net": false,
	} {
		if got := r.allows(addr); got != want {
			t.Errorf("allows(%q) = %v, want %v", addr, got, want)
		}
	}
}

package httpin

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestEventBodies(t *testing.T) {
	for _, tc := range []struct {
		name, contentType, body, payload string
	}{
		{"JSON object, bytes as sent", "application/json", "{ \"temp\": 31.5,\n \"room\": \"cellar\" }", "{ \"temp\": 31.5,\n \"room\": \"cellar\" }"},
		{"JSON number", "application/json; charset=utf-8", "21.5", "21.5"},
		{"JSON subtype", "application/vnd.sensor+json", `{"t":1}`, `{"t":1}`},
		{"form as ArduinoHttpClient sends it", "application/x-www-form-urlencoded", "temp=31.50&room=cellar+2&zip=007&hum=-4e1",
			`{"hum":-4e1,"room":"cellar 2","temp":31.50,"zip":"007"}`},
		{"form, nothing a number", "application/x-www-form-urlencoded", "n=NaN&i=Infinity&h=0x10&big=1e999&u=1_000&s=%3Cb%3E",
			`{"big":"1e999","h":"0x10","i":"Infinity","n":"NaN","s":"<b>","u":"1_000"}`},
		{"form token never in a payload", "application/x-www-form-urlencoded", "token=" + testToken + "&v=1", `{"v":1}`},
		{"empty form", "application/x-www-form-urlencoded", "", `{}`},
		{"text", "text/plain", "21.5", "21.5"},
		{"text with charset", "text/plain; charset=UTF-8", "door open\n", "door open\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := start(t, Options{}, nil)
			ts.post(t, "/v1/events/sensors/cellar", tc.contentType, tc.body).wantAccepted(t)
			evs, _ := ts.sink.recorded()
			if len(evs) != 1 {
				t.Fatalf("%d events, want 1", len(evs))
			}
			ev := evs[0]
			if ev.Source != "http" || ev.Topic != "sensors/cellar" || string(ev.Payload) != tc.payload || !ev.Received.Equal(testNow) || ev.Retained {
				t.Errorf("event = %+v (payload %s), want http sensors/cellar %s at %v", ev, ev.Payload, tc.payload, testNow)
			}
			if ts.results.get(ResultAccepted) != 1 {
				t.Errorf("accepted counted %d times", ts.results.get(ResultAccepted))
			}
		})
	}
}

func TestEventGET(t *testing.T) {
	ts := start(t, Options{}, nil)
	req, _ := http.NewRequest(http.MethodGet, ts.url+"/v1/events/garden/soil?moisture=12&battery=3.71&token="+testToken, nil)
	a := do(t, req)
	a.wantAccepted(t)
	if cc := a.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", cc)
	}
	evs, _ := ts.sink.recorded()
	if len(evs) != 1 || evs[0].Topic != "garden/soil" || string(evs[0].Payload) != `{"battery":3.71,"moisture":12}` {
		t.Fatalf("events = %+v", evs)
	}
	if strings.Contains(ts.logs.String(), testToken) {
		t.Errorf("the log holds the token:\n%s", ts.logs.String())
	}
	if !strings.Contains(ts.logs.String(), "token=REDACTED") {
		t.Errorf("the log does not show the redacted URL:\n%s", ts.logs.String())
	}
}

func TestEventTopics(t *testing.T) {
	for _, tc := range []struct {
		path  string // after /v1/events, as sent on the wire
		topic string // "" for a refusal
		err   string
	}{
		{"/sensors%2Fcellar/temp", "sensors/cellar/temp", ""}, // percent-decoded, %2F included
		{"/caf%C3%A9/%20x", "café/ x", ""},
		{"/a//b", "a//b", ""}, // empty levels inside are levels [MQTT-4.7.3-1]
		{"/a/", "a/", ""},
		{"/$devices/x", "$devices/x", ""},
		{"/" + strings.Repeat("a", MaxTopic), strings.Repeat("a", MaxTopic), ""},

		{"", "", "topic missing"},
		{"/", "", "topic missing"},
		{"/a/+/b", "", "wildcards"}, // [MQTT-4.7.3-1]
		{"/a/%2B", "", "wildcards"},
		{"/a/%23", "", "wildcards"},
		{"/a%00b", "", "NUL"}, // [MQTT-4.7.3-2]
		{"/a%0D%0Ab", "", "CR or LF"},
		{"/a%0Ab", "", "CR or LF"},
		{"/a%FFb", "", "UTF-8"},      // [MQTT-1.5.3-1]
		{"/a%ED%A0%80", "", "UTF-8"}, // an encoded UTF-16 surrogate
		{"//a", "", "empty level"},   // "no empty levels at the start"
		{"/%2Fa", "", "empty level"},
		{"/a/../b", "", `".."`},
		{"/a/%2E%2E/b", "", `".."`},
		{"/./a", "", `"."`},
		{"/" + strings.Repeat("a", MaxTopic+1), "", "longer than 1024"},
	} {
		t.Run(short(tc.path), func(t *testing.T) {
			ts := start(t, Options{}, nil)
			req, err := http.NewRequest(http.MethodPost, ts.url+"/", strings.NewReader("1"))
			if err != nil {
				t.Fatal(err)
			}
			req.URL.Opaque = "//" + req.URL.Host + eventsPath + tc.path // as written, no cleaning
			req.Header.Set("Content-Type", "text/plain")
			req.Header.Set("Authorization", "Bearer "+testToken)
			a := do(t, req)
			evs, _ := ts.sink.recorded()
			if tc.topic == "" {
				a.wantError(t, http.StatusBadRequest, tc.err)
				if len(evs) != 0 {
					t.Errorf("a refused topic reached the sink: %q", evs[0].Topic)
				}
				return
			}
			a.wantAccepted(t)
			if len(evs) != 1 || evs[0].Topic != tc.topic {
				t.Errorf("events = %+v, want topic %q", evs, tc.topic)
			}
		})
	}
}

func TestTokenPlaces(t *testing.T) {
	ts := start(t, Options{}, nil)
	for _, tc := range []struct {
		name string
		set  func(r *http.Request)
		ok   bool
	}{
		{"bearer", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+testToken) }, true},
		{"bearer, scheme in lower case", func(r *http.Request) { r.Header.Set("Authorization", "bearer "+testToken) }, true},
		{"the second configured token", func(r *http.Request) { r.Header.Set("Authorization", "Bearer second-token") }, true},
		{"basic, any user", func(r *http.Request) { r.SetBasicAuth("esp32-garden", testToken) }, true},
		{"basic, no user", func(r *http.Request) { r.SetBasicAuth("", testToken) }, true},
		{"query", func(r *http.Request) { r.URL.RawQuery = "token=" + url.QueryEscape(testToken) }, true},

		{"none", func(*http.Request) {}, false},
		{"wrong bearer", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+testToken+"x") }, false},
		{"a prefix of the token", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+testToken[:5]) }, false},
		{"empty bearer", func(r *http.Request) { r.Header.Set("Authorization", "Bearer ") }, false},
		{"token as basic user", func(r *http.Request) { r.SetBasicAuth(testToken, "") }, false},
		{"wrong query", func(r *http.Request) { r.URL.RawQuery = "token=nope" }, false},
		{"empty query", func(r *http.Request) { r.URL.RawQuery = "token=" }, false},
		{"query name in another case", func(r *http.Request) { r.URL.RawQuery = "TOKEN=" + testToken }, false},
		{"token as a form field", func(r *http.Request) {
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			r.Body = http.NoBody
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(mustEvents(ts))
			req, _ := http.NewRequest(http.MethodPost, ts.url+"/v1/events/door", strings.NewReader("open"))
			req.Header.Set("Content-Type", "text/plain")
			tc.set(req)
			a := do(t, req)
			got := len(mustEvents(ts)) - before
			if tc.ok {
				a.wantAccepted(t)
				return
			}
			a.wantError(t, http.StatusUnauthorized, "valid token")
			if h := a.header.Get("WWW-Authenticate"); !strings.HasPrefix(h, "Bearer") {
				t.Errorf("WWW-Authenticate = %q", h)
			}
			if got != 0 {
				t.Error("an unauthenticated request reached the sink")
			}
		})
	}
	if n := ts.results.get(ResultUnauthorized); n != 9 {
		t.Errorf("unauthorized counted %d times, want 9", n)
	}
}

func mustEvents(ts *testServer) []any {
	evs, _ := ts.sink.recorded()
	out := make([]any, len(evs))
	for i := range evs {
		out[i] = evs[i]
	}
	return out
}

func TestRefusals(t *testing.T) {
	ts := start(t, Options{}, nil)
	for _, tc := range []struct {
		name, method, path, contentType, body string
		status                                int
		err, result                           string
	}{
		{"no content type", "POST", "/v1/events/a", "", "1", 415, "Content-Type must be", ResultUnsupported},
		{"image", "POST", "/v1/events/a", "image/png", "1", 415, "Content-Type must be", ResultUnsupported},
		{"latin-1 text", "POST", "/v1/events/a", "text/plain; charset=iso-8859-1", "1", 415, "charset utf-8", ResultUnsupported},
		{"broken content type", "POST", "/v1/events/a", "text/", "1", 415, "Content-Type", ResultUnsupported},
		{"bad JSON", "POST", "/v1/events/a", "application/json", `{"temp":`, 400, "not valid JSON", ResultBadRequest},
		{"empty JSON", "POST", "/v1/events/a", "application/json", ``, 400, "not valid JSON", ResultBadRequest},
		{"NaN", "POST", "/v1/events/a", "application/json", `{"temp":NaN}`, 400, "not valid JSON", ResultBadRequest},
		{"Infinity", "POST", "/v1/events/a", "application/json", `Infinity`, 400, "not valid JSON", ResultBadRequest},
		{"JSON with invalid UTF-8", "POST", "/v1/events/a", "application/json", "\"\xff\"", 400, "UTF-8", ResultBadRequest},
		{"text with invalid UTF-8", "POST", "/v1/events/a", "text/plain", "\xff", 400, "UTF-8", ResultBadRequest},
		{"bad form escape", "POST", "/v1/events/a", "application/x-www-form-urlencoded", "t=%zz", 400, "bad form encoding", ResultBadRequest},
		{"form field twice", "POST", "/v1/events/a", "application/x-www-form-urlencoded", "t=1&t=2", 400, `"t" given 2 times`, ResultBadRequest},
		{"form field without name", "POST", "/v1/events/a", "application/x-www-form-urlencoded", "=1", 400, "without a name", ResultBadRequest},
		{"PUT", "PUT", "/v1/events/a", "text/plain", "1", 405, "use GET, POST", ResultBadRequest},
		{"GET mail", "GET", "/v1/mail", "", "", 405, "use POST", ResultBadRequest},
		{"unknown path", "POST", "/v2/events/a", "text/plain", "1", 404, "no such endpoint", ResultBadRequest},
		{"admin path", "GET", "/api/v1/outbox", "", "", 404, "no such endpoint", ResultBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, ts.url+tc.path, strings.NewReader(tc.body))
			if tc.contentType != "" {
				req.Header.Set("Content-Type", tc.contentType)
			}
			req.Header.Set("Authorization", "Bearer "+testToken)
			before := ts.results.get(tc.result)
			a := do(t, req)
			a.wantError(t, tc.status, tc.err)
			if tc.status == 405 && a.header.Get("Allow") == "" {
				t.Error("405 without Allow")
			}
			if ts.results.get(tc.result) != before+1 {
				t.Errorf("not counted as %s", tc.result)
			}
		})
	}
	if evs := mustEvents(ts); len(evs) != 0 {
		t.Errorf("refused requests reached the sink: %v", evs)
	}
}

func TestBodyLimit(t *testing.T) {
	const limit = 100
	ts := start(t, Options{MaxBodyBytes: limit}, nil)
	exact := `"` + strings.Repeat("x", limit-2) + `"`
	ts.post(t, "/v1/events/a", "application/json", exact).wantAccepted(t)

	over := exact + " "
	ts.post(t, "/v1/events/a", "application/json", over).wantError(t, http.StatusRequestEntityTooLarge, "larger than 100 bytes")

	// Without a Content-Length (chunked), the limit holds while reading.
	req, _ := http.NewRequest(http.MethodPost, ts.url+"/v1/events/a", struct{ *strings.Reader }{strings.NewReader(over)})
	req.Header.Set("Content-Type", "text/plain")
	req.Header.Set("Authorization", "Bearer "+testToken)
	if req.ContentLength != 0 {
		t.Fatal("the request has a Content-Length")
	}
	do(t, req).wantError(t, http.StatusRequestEntityTooLarge, "larger than")

	// A stranger's big body is refused for the token, unread.
	req, _ = http.NewRequest(http.MethodPost, ts.url+"/v1/events/a", strings.NewReader(over))
	req.Header.Set("Content-Type", "text/plain")
	do(t, req).wantError(t, http.StatusUnauthorized, "token")

	if evs := mustEvents(ts); len(evs) != 1 || ts.results.get(ResultTooBig) != 2 {
		t.Errorf("%d events (want 1), too_big counted %d (want 2)", len(evs), ts.results.get(ResultTooBig))
	}
}

func TestSinkAnswers(t *testing.T) {
	t.Run("rate limited", func(t *testing.T) {
		ts := start(t, Options{}, &recordingSink{err: &RateLimitedError{RetryAfter: 2500 * time.Millisecond}})
		a := ts.post(t, "/v1/events/a", "text/plain", "1")
		a.wantError(t, http.StatusTooManyRequests, "rate limited")
		if ra := a.header.Get("Retry-After"); ra != "3" {
			t.Errorf("Retry-After = %q, want 3 (2.5 s rounded up)", ra)
		}
	})
	t.Run("fails", func(t *testing.T) {
		sink := &recordingSink{err: errorString("write outbox: disk full")}
		ts := start(t, Options{}, sink)
		for range 3 {
			ts.post(t, "/v1/events/a", "text/plain", "1").wantError(t, http.StatusServiceUnavailable, "retry")
		}
		if n := ts.results.get(ResultError); n != 3 {
			t.Errorf("error counted %d times, want 3", n)
		}
		sink.mu.Lock()
		sink.err = nil
		sink.mu.Unlock()
		ts.post(t, "/v1/events/a", "text/plain", "1").wantAccepted(t)
		logs := ts.logs.String()
		if n := strings.Count(logs, "disk full"); n != 1 {
			t.Errorf("the failure is logged %d times, want once:\n%s", n, logs)
		}
		if !strings.Contains(logs, "committed again") {
			t.Errorf("the recovery is not logged:\n%s", logs)
		}
	})
}

type errorString string

func (e errorString) Error() string { return string(e) }

// The 202 means committed: no answer may reach the device while the Sink
// has not returned.
func TestAnswerWaitsForCommit(t *testing.T) {
	sink := &recordingSink{block: make(chan struct{}), entered: make(chan struct{}, 1)}
	ts := start(t, Options{}, sink)
	answered := make(chan answer, 1)
	go func() { answered <- ts.post(t, "/v1/events/a", "text/plain", "1") }()
	<-sink.entered
	select {
	case a := <-answered:
		t.Fatalf("answered %d before the commit ended", a.status)
	case <-time.After(50 * time.Millisecond): // room for a premature answer to arrive
	}
	close(sink.block)
	(<-answered).wantAccepted(t)
}

func TestCommitTimeout(t *testing.T) {
	sink := &recordingSink{block: make(chan struct{}), entered: make(chan struct{}, 1)}
	ts := start(t, Options{CommitTimeout: 100 * time.Millisecond}, sink)
	ts.post(t, "/v1/events/a", "text/plain", "1").wantError(t, http.StatusServiceUnavailable, "retry")
	close(sink.block)
}

// Classic Arduino Ethernet sketches print an HTTP/1.0 request by hand,
// without a Host header.
func TestHandWrittenHTTP10(t *testing.T) {
	ts := start(t, Options{}, nil)
	got := raw(t, ts.Addr(), "POST /v1/events/cellar/uno HTTP/1.0\r\n"+authHeader+
		"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 9\r\n\r\ntemp=21.5")
	if got != "HTTP/1.0 202 Accepted" {
		t.Errorf("answer %q, want 202", got)
	}
	if evs, _ := ts.sink.recorded(); len(evs) != 1 || evs[0].Topic != "cellar/uno" || string(evs[0].Payload) != `{"temp":21.5}` {
		t.Errorf("events = %+v", evs)
	}
}

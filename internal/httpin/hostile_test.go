package httpin

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// raw sends req as bytes on a fresh connection and returns the status
// line of the answer, or "" when the server closed the connection without
// one. It fails the test if nothing happens within five seconds.
func raw(t *testing.T, addr, req string) string {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	go func() { _, _ = conn.Write([]byte(req)) }()
	return statusLine(t, conn)
}

func statusLine(t *testing.T, conn net.Conn) string {
	t.Helper()
	line, err := bufio.NewReader(conn).ReadString('\n')
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the server neither answered nor closed the connection")
	}
	return strings.TrimSpace(line)
}

const authHeader = "Authorization: Bearer " + testToken + "\r\n"

func TestHugeHeaders(t *testing.T) {
	ts := start(t, Options{}, nil)
	big := "X-Padding: " + strings.Repeat("a", 1<<20) + "\r\n"
	got := raw(t, ts.Addr(), "POST /v1/events/a HTTP/1.1\r\nHost: x\r\n"+authHeader+big+"Content-Type: text/plain\r\nContent-Length: 1\r\n\r\n1")
	if !strings.HasPrefix(got, "HTTP/1.1 431") {
		t.Errorf("answer %q, want 431", got)
	}
	if evs := mustEvents(ts); len(evs) != 0 {
		t.Error("a request with huge headers reached the sink")
	}
}

// A client that opens a connection and trickles its request (slow-loris)
// is cut off by the read timeout, in the headers or in the body.
func TestSlowClients(t *testing.T) {
	ts := start(t, Options{ReadTimeout: 300 * time.Millisecond}, nil)
	t.Run("headers never end", func(t *testing.T) {
		if got := raw(t, ts.Addr(), "POST /v1/events/a HTTP/1.1\r\nHost: x\r\n"); got != "" {
			t.Errorf("answer %q, want the connection closed", got)
		}
	})
	t.Run("body never ends", func(t *testing.T) {
		head := "POST /v1/events/a HTTP/1.1\r\nHost: x\r\n" + authHeader + "Content-Type: text/plain\r\nContent-Length: 1000\r\n\r\n"
		if got := raw(t, ts.Addr(), head+"12"); !strings.HasPrefix(got, "HTTP/1.1 408") {
			t.Errorf("answer %q, want 408", got)
		}
	})
	t.Run("body trickles for ever", func(t *testing.T) {
		conn, err := net.Dial("tcp", ts.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = conn.Write([]byte("POST /v1/events/a HTTP/1.1\r\nHost: x\r\n" + authHeader + "Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"))
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					if _, err := conn.Write([]byte("1\r\n1\r\n")); err != nil {
						return
					}
				}
			}
		}()
		if got := statusLine(t, conn); !strings.HasPrefix(got, "HTTP/1.1 408") {
			t.Errorf("answer %q, want 408", got)
		}
	})
	if evs := mustEvents(ts); len(evs) != 0 {
		t.Error("a slow request reached the sink")
	}
}

func TestHostileRequestLines(t *testing.T) {
	ts := start(t, Options{}, nil)
	for _, tc := range []struct{ name, target, want string }{
		{"raw invalid UTF-8", "/v1/events/a\xffb", "HTTP/1.1 400"},
		{"raw dot segments", "/v1/events/../../api/v1/outbox", "HTTP/1.1 400"},
		{"dot segments before the prefix", "/v1/x/../events/a", "HTTP/1.1 404"},
		{"double slash before the prefix", "//v1/events/a", "HTTP/1.1 404"},
		{"bad escape", "/v1/events/a%zz", "HTTP/1.1 400"},
		{"raw space", "/v1/events/a b", "HTTP/1.1 400"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := raw(t, ts.Addr(), "POST "+tc.target+" HTTP/1.1\r\nHost: x\r\n"+authHeader+"Content-Type: text/plain\r\nContent-Length: 1\r\nConnection: close\r\n\r\n1")
			if !strings.HasPrefix(got, tc.want) {
				t.Errorf("answer %q, want %s", got, tc.want)
			}
		})
	}
	if evs := mustEvents(ts); len(evs) != 0 {
		t.Errorf("hostile requests reached the sink: %v", evs)
	}
}

func TestDeepJSON(t *testing.T) {
	ts := start(t, Options{MaxBodyBytes: 1 << 20}, nil)
	deep := strings.Repeat("[", 10000) + strings.Repeat("]", 10000)
	deepObj := strings.Repeat(`{"a":`, 10000) + "1" + strings.Repeat("}", 10000)
	for _, path := range []string{"/v1/events/a", "/v1/mail", "/v1/alertmanager"} {
		for _, body := range []string{deep, deepObj} {
			ts.post(t, path, "application/json", body).wantError(t, http.StatusBadRequest, "nested deeper than 32")
		}
	}
	ok := strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth)
	ts.post(t, "/v1/events/a", "application/json", ok).wantAccepted(t)
	// Brackets inside strings are text, not nesting.
	ts.post(t, "/v1/events/a", "application/json", `{"s":"`+strings.Repeat(`[\"`, 100)+`"}`).wantAccepted(t)
	ts.post(t, "/v1/events/a", "application/json", strings.Repeat("[", MaxDepth+1)+strings.Repeat("]", MaxDepth+1)).
		wantError(t, http.StatusBadRequest, "nested deeper")
}

func TestRedactURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"/v1/events/a?token=s3cret&t=1", "/v1/events/a?token=REDACTED&t=1"},
		{"/v1/events/a?t=1&TOKEN=s3cret", "/v1/events/a?t=1&token=REDACTED"},
		{"/v1/events/a?%74oken=s3cret", "/v1/events/a?token=REDACTED"},
		{"/v1/events/a?x=%zz&token=s3cret", "/v1/events/a?x=%zz&token=REDACTED"},
		{"/v1/events/a?%zzs3cret=1", "/v1/events/a?token=REDACTED"}, // a name alertd cannot read is not shown
		{"/v1/events/token=s3cret/x", "/v1/events/token=REDACTED/x"},
		{"/v1/events/a%2Ftoken%3Ds3cret", "/v1/events/a%2Ftoken=REDACTED"},
		{"/v1/events/a?x=token%3Ds3cret", "/v1/events/a?token=REDACTED"},
	} {
		req, err := http.NewRequest(http.MethodGet, "http://h"+tc.in, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := redactURL(req.URL); got != tc.want || strings.Contains(got, "s3cret") {
			t.Errorf("redactURL(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

package main

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestIntList(t *testing.T) {
	var l intList
	if err := l.Set("1, 8,16"); err != nil || l.String() != "1,8,16" {
		t.Fatalf("Set(1, 8,16) = %v, %q", err, l.String())
	}
	for _, bad := range []string{"", "0", "1,x", "-2"} {
		if err := l.Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
}

func TestSummarize(t *testing.T) {
	var lat []time.Duration
	for i := 100; i >= 1; i-- {
		lat = append(lat, time.Duration(i)*time.Millisecond)
	}
	s := summarize(lat)
	if s.p50 != 51*time.Millisecond || s.p99 != 100*time.Millisecond || s.max != 100*time.Millisecond {
		t.Fatalf("summarize(1..100 ms) = %+v", s)
	}
	if lat[0] != 100*time.Millisecond {
		t.Fatal("summarize sorted its argument")
	}
	if (summarize(nil) != latencySummary{}) {
		t.Fatal("summarize(nil) is not zero")
	}
}

// The open loop keeps its rate while operations are slow, and counts
// their latency from when each was due.
func TestOpenLoopDoesNotWaitForSlowOperations(t *testing.T) {
	lat, errs, _, most := openLoop(200, 250*time.Millisecond, func() error {
		time.Sleep(30 * time.Millisecond)
		return nil
	})
	if errs != 0 || len(lat) < 45 || len(lat) > 51 {
		t.Fatalf("%d operations (%d errors) at 200/s for 250 ms, want 50", len(lat), errs)
	}
	if most < 4 {
		t.Fatalf("at most %d in flight: the loop waited for slow operations", most)
	}
	if s := summarize(lat); s.p50 < 30*time.Millisecond {
		t.Fatalf("p50 %v is below the operation's 30 ms", s.p50)
	}
}

func TestClosedLoop(t *testing.T) {
	lat, errs, _, elapsed := closedLoop(4, 100*time.Millisecond, func(int) error {
		time.Sleep(10 * time.Millisecond)
		return nil
	})
	if errs != 0 || len(lat) < 20 || len(lat) > 48 {
		t.Fatalf("%d operations, %d errors: want about 40 from 4 clients at 10 ms for 100 ms", len(lat), errs)
	}
	if elapsed < 100*time.Millisecond {
		t.Fatalf("elapsed %v, shorter than the run", elapsed)
	}
}

// A device's mail, sent from its own loopback address, is recognised by
// the upstream sink.
func TestDeviceMailArrives(t *testing.T) {
	a, err := startArrivals()
	if err != nil {
		t.Fatal(err)
	}
	defer a.srv.Close()
	cl, _, err := dialDevice(fmt.Sprintf("127.0.0.1:%d", a.port), 3)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for _, id := range []int64{41, 42} {
		if err := cl.SendMail("cellar3@casa.lan", []string{"ops@example.org"}, bytes.NewReader(deviceMail(id, 3))); err != nil {
			t.Fatal(err)
		}
	}
	got := a.waitFor([]int64{41, 42}, 5*time.Second)
	if len(got) != 2 {
		t.Fatalf("arrived: %v, want 41 and 42", got)
	}
	if !bytes.Equal(deviceMail(7, 1)[:20], deviceMail(8, 1)[:20]) || bytes.Equal(deviceMail(7, 1), deviceMail(8, 1)) {
		t.Fatal("device mails should share their sender and differ in subject and text")
	}
}

func TestPostfixMissingIsSaid(t *testing.T) {
	old := postfixDaemons
	postfixDaemons = t.TempDir()
	defer func() { postfixDaemons = old }()
	if why := postfixMissing(); !strings.Contains(why, "apt-get install postfix") {
		t.Fatalf("postfixMissing() = %q", why)
	}
	if _, err := startPostfix(t.TempDir(), 25); err == nil {
		t.Fatal("startPostfix without Postfix succeeded")
	}
}

// The HTTP baseline commits readings above 30 before its 202, and
// answers the same statuses as alertd's listener for the cases the
// scenario sends.
func TestBareHTTP(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bare.db")
	h, db, err := newBareHTTP(path)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	target := &httpTarget{name: "bare", base: srv.URL, client: srv.Client()}
	for i, k := range httpKinds {
		if err := target.post(k, int64(i)); err != nil {
			t.Fatalf("%s: %v", k.name, err)
		}
	}
	resp, err := http.Post(srv.URL+"/v1/events/a/b", "application/json", strings.NewReader(`{"temp": 40}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("without a token: %d", resp.StatusCode)
	}
	n := 0
	_ = db.View(func(tx *bolt.Tx) error { n = tx.Bucket(bareBucket).Stats().KeyN; return nil })
	if n != 1 {
		t.Fatalf("%d readings committed, want the one alert", n)
	}
	if target.alerts.Load() != 1 {
		t.Fatalf("alerts counted: %d", target.alerts.Load())
	}
	db.Close()
}

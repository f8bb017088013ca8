//go:build unix

package app

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/httpapi"
	"github.com/alertd/alertd/internal/mqtttest"
	"github.com/alertd/alertd/internal/silence"
	"github.com/alertd/alertd/internal/smtptest"
)

// The status page in a real browser, Debian's headless Chromium: what a
// person sees, with JavaScript and without, on a phone-sized screen. The
// screenshots are artefacts: keep them with
//
//	go test -run TestStatusPageInChromium -artifacts -outputdir /tmp/shots ./internal/app
func TestStatusPageInChromium(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.ImplicitTLS, Users: map[string]string{"alerts@example.org": smtpPassword}})
	srv.Fail("DATA", 1, 550, [3]int{5, 1, 1}, "<ops@example.org>: mailbox unavailable")
	t.Setenv("SMTP_PASSWORD", smtpPassword)
	dir := t.TempDir()
	app := startApp(t, dir, fmt.Sprintf(`mqtt: {listen: 127.0.0.1:0}
smtp:
  host: 127.0.0.1
  port: %d
  security: tls
  tls: {ca_file: %s}
  username: alerts@example.org
  password: ${SMTP_PASSWORD}
  from: "alertd <alerts@example.org>"
  retry: {initial: 50ms, max: 200ms, give_up_after: 1m}
store: {path: ${DIR}/alertd.db}
http: {listen: 127.0.0.1:0}
defaults: {to: ["Ops <ops@example.org>"]}
rules:
%s`, srv.Port, srv.CAFile, statusRules))
	pub := mqtttest.NewPublisher(t, app.BrokerURL())

	// The shed's mail is refused for good: a dead letter. Its flap
	// within the cooldown is held back.
	pub.Publish(t, "sensors/shed/telemetry", `{"temp": 35}`)
	waitFor(t, 15*time.Second, "the dead letter", func() bool { return app.counter("dead") == 1 })
	pub.Publish(t, "sensors/shed/telemetry", `{"temp": 20}`)
	pub.Publish(t, "sensors/shed/telemetry", `{"temp": 36}`)
	hostile := `sensors/<img src=x onerror=alert(1)>/telemetry`
	pub.Publish(t, hostile, `{"temp": 33}`)
	pub.Publish(t, "sensors/greenhouse/telemetry", `{"temp": 31.5}`)
	pub.Publish(t, "cellar/north/humidity", `{"hum": 91}`)
	if _, err := app.silences.Add(silence.Silence{Rule: "cellar-damp", Series: "cellar/south/humidity", Comment: "dehumidifier <b>broken</b>",
		Created: time.Now(), Expires: time.Now().Add(3 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "every alert", func() bool {
		st := app.Status()
		return len(st.Firing) == 3 && len(st.Pending) == 1 && len(st.HeldBack()) == 1
	})
	srv.WaitMessages(t, 3, 15*time.Second) // the mails of the shed's resolve, the hostile topic, the greenhouse

	// Seen through a proxy that, on the page's second load, makes the
	// greenhouse recover first: the script's refresh must take the
	// resolved alert off the page without a reload.
	backend, _ := url.Parse("http://" + app.HTTPAddr())
	proxy := httputil.NewSingleHostReverseProxy(backend)
	var loads atomic.Int32
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" && loads.Add(1) == 2 {
			pub.Publish(t, "sensors/greenhouse/telemetry", `{"temp": 20}`)
			waitFor(t, 10*time.Second, "the greenhouse resolved", func() bool {
				_, ok := firing(app.Status(), "greenhouse-hot", "sensors/greenhouse/telemetry")
				return !ok
			})
		}
		proxy.ServeHTTP(w, r)
	}))
	defer front.Close()

	// Without JavaScript: the whole page is there, the hostile topic as text.
	browser := startChromium(t)
	plain := browser.phone(false)
	plain.open(front.URL + "/")
	dom := plain.dom()
	for _, want := range []string{
		`<tr class="alert firing" data-rule="greenhouse-hot" data-series="sensors/greenhouse/telemetry">`,
		`<td data-label="Value"><b>31.5</b> <small>temp, threshold 30</small></td>`,
		`<tr class="alert pending" data-rule="cellar-damp" data-series="cellar/north/humidity">`,
		`<tr class="held-row" data-rule="greenhouse-hot" data-series="sensors/shed/telemetry">`,
		`sensors/&lt;img src=x onerror=alert(1)&gt;/telemetry`,
		`server replied 550 5.1.1 "&lt;ops@example.org&gt;: mailbox unavailable"`,
		`dehumidifier &lt;b&gt;broken&lt;/b&gt;`,
		`<li class="bad"><a href="#firing">3 firing</a></li>`,
		`<noscript><meta http-equiv="refresh" content="10"></noscript>`,
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("the page without JavaScript lacks %s", want)
		}
	}
	if regexp.MustCompile(`<img[^>]*onerror`).MatchString(dom) || strings.Contains(dom, "<b>broken</b>") {
		t.Errorf("device or operator text became markup")
	}
	if t.Failed() {
		t.Fatalf("rendered DOM:\n%s", dom)
	}
	if w, _ := plain.size(); w > phoneWidth {
		t.Errorf("the page is %v px wide on a %d px phone: it scrolls sideways", w, phoneWidth)
	}
	shot := filepath.Join(t.ArtifactDir(), "status-phone-nojs-whole.png")
	plain.screenshot(shot, true)
	t.Logf("the whole page on a phone, without JavaScript: %s", shot)

	// With JavaScript: the page refreshes itself in place, and on its
	// second load the greenhouse has recovered.
	loads.Store(0)
	live := browser.phone(true)
	live.open(front.URL + "/")
	if !strings.Contains(live.dom(), `data-series="sensors/greenhouse/telemetry"`) {
		t.Fatal("the firing greenhouse is not on the page")
	}
	shot = filepath.Join(t.ArtifactDir(), "status-phone.png")
	live.screenshot(shot, false)
	t.Logf("phone-sized screenshot: %s", shot)
	live.passTime(httpapi.RefreshSeconds*time.Second + time.Second)
	if n := loads.Load(); n != 2 {
		t.Fatalf("the page was loaded %d times in %ds, want once and once by its script", n, httpapi.RefreshSeconds+1)
	}
	dom = live.dom()
	if !regexp.MustCompile(`<html[^>]* data-swapped="1"`).MatchString(dom) {
		t.Errorf("the script did not swap in the fresh page")
	}
	if strings.Contains(dom, `data-series="sensors/greenhouse/telemetry"`) {
		t.Errorf("the resolved alert is still on the page after the refresh")
	}
	for _, want := range []string{`<li class="bad"><a href="#firing">2 firing</a></li>`, `data-series="sensors/shed/telemetry"`,
		`<p id="stale" role="alert" hidden="">`, `<title>(2 firing) alertd on `} {
		if !strings.Contains(dom, want) {
			t.Errorf("the refreshed page lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("rendered DOM:\n%s", dom)
	}
}

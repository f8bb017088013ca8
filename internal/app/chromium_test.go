//go:build unix

package app

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// A real browser for tests: Debian's headless Chromium, driven over the
// DevTools protocol on a pipe (--remote-debugging-pipe: JSON messages,
// each ended by a NUL, commands on its fd 3, answers and events on its
// fd 4). The command-line modes (--dump-dom) cannot show a page with
// JavaScript disabled: they read the DOM by running JavaScript.

// browser is one Chromium process.
type browser struct {
	t      *testing.T
	cmd    *exec.Cmd
	in     *os.File // its fd 3
	stderr bytes.Buffer

	mu      sync.Mutex
	next    int
	waiting map[int]chan cdpMessage
	events  chan cdpMessage
	gone    chan struct{} // closed when its fd 4 closes
}

type cdpMessage struct {
	ID        int             `json:"id,omitempty"`
	Method    string          `json:"method,omitempty"`
	SessionID string          `json:"sessionId,omitempty"`
	Params    json.RawMessage `json:"params,omitempty"`
	Result    json.RawMessage `json:"result,omitempty"`
	Error     *struct {
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

// startChromium starts Chromium, failing the test (never skipping it)
// when it is not installed; it is stopped when the test ends.
func startChromium(t *testing.T) *browser {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("this test needs Debian's headless Chromium: apt-get install chromium (scripts/test.sh installs it): %v", err)
	}
	profile, err := os.MkdirTemp("", "alertd-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	cmdR, cmdW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	b := &browser{t: t, in: cmdW, waiting: map[int]chan cdpMessage{}, events: make(chan cdpMessage, 1024), gone: make(chan struct{})}
	b.cmd = exec.Command(bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-breakpad",
		"--hide-scrollbars", "--user-data-dir="+profile, "--remote-debugging-pipe", "about:blank")
	b.cmd.ExtraFiles = []*os.File{cmdR, outW}
	b.cmd.Stderr = &b.stderr
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its helpers go with it
	started := time.Now()
	if err := b.cmd.Start(); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	cmdR.Close()
	outW.Close()
	go b.read(outR)
	t.Cleanup(func() { b.stop(profile) })
	var v struct {
		Product string `json:"product"`
	}
	b.call("", "Browser.getVersion", nil, &v)
	t.Logf("%s started in %s", v.Product, time.Since(started).Round(time.Millisecond))
	return b
}

func (b *browser) read(out *os.File) {
	defer close(b.gone)
	r := bufio.NewReader(out)
	for {
		line, err := r.ReadBytes(0)
		if err != nil {
			return
		}
		var m cdpMessage
		if json.Unmarshal(line[:len(line)-1], &m) != nil {
			continue
		}
		if m.ID == 0 {
			select {
			case b.events <- m:
			default: // nobody waits for that many events
			}
			continue
		}
		b.mu.Lock()
		ch := b.waiting[m.ID]
		delete(b.waiting, m.ID)
		b.mu.Unlock()
		if ch != nil {
			ch <- m
		}
	}
}

func (b *browser) stop(profile string) {
	_, _ = b.in.Write([]byte(`{"id":999999,"method":"Browser.close"}` + "\x00"))
	done := make(chan error, 1)
	go func() { done <- b.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	b.in.Close()
	os.RemoveAll(profile)
	if b.t.Failed() {
		b.t.Logf("chromium's stderr:\n%s", b.stderr.String())
	}
}

// call sends a command (to a page when session is set) and decodes its
// result into out.
func (b *browser) call(session, method string, params, out any) {
	b.t.Helper()
	b.mu.Lock()
	b.next++
	id := b.next
	ch := make(chan cdpMessage, 1)
	b.waiting[id] = ch
	b.mu.Unlock()
	msg, _ := json.Marshal(map[string]any{"id": id, "sessionId": session, "method": method, "params": orEmptyParams(params)})
	if _, err := b.in.Write(append(msg, 0)); err != nil {
		b.t.Fatalf("chromium %s: %v", method, err)
	}
	select {
	case m := <-ch:
		if m.Error != nil {
			b.t.Fatalf("chromium %s: %s", method, m.Error.Message)
		}
		if out != nil {
			if err := json.Unmarshal(m.Result, out); err != nil {
				b.t.Fatalf("chromium %s: %v", method, err)
			}
		}
	case <-b.gone:
		b.t.Fatalf("chromium exited during %s:\n%s", method, b.stderr.String())
	case <-time.After(30 * time.Second):
		b.t.Fatalf("chromium did not answer %s within 30s", method)
	}
}

func orEmptyParams(p any) any {
	if p == nil {
		return struct{}{}
	}
	return p
}

// await waits for a page's event.
func (b *browser) await(session, method string, timeout time.Duration) {
	b.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case m := <-b.events:
			if m.SessionID == session && m.Method == method {
				return
			}
		case <-b.gone:
			b.t.Fatalf("chromium exited waiting for %s", method)
		case <-deadline:
			b.t.Fatalf("no %s within %s", method, timeout)
		}
	}
}

// tab is one page of the browser.
type tab struct {
	b       *browser
	session string
}

// phoneWidth × 900 CSS pixels is a phone's screen (a Pixel 7's).
const phoneWidth = 412

// phone opens a tab the size of a phone's screen, with JavaScript on or
// off.
func (b *browser) phone(javascript bool) *tab {
	b.t.Helper()
	var target struct {
		TargetID string `json:"targetId"`
	}
	b.call("", "Target.createTarget", map[string]any{"url": "about:blank"}, &target)
	var att struct {
		SessionID string `json:"sessionId"`
	}
	b.call("", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &att)
	p := &tab{b: b, session: att.SessionID}
	b.call(p.session, "Page.enable", nil, nil)
	b.call(p.session, "Emulation.setDeviceMetricsOverride", map[string]any{"width": phoneWidth, "height": 900, "deviceScaleFactor": 2, "mobile": true}, nil)
	if !javascript {
		b.call(p.session, "Emulation.setScriptExecutionDisabled", map[string]any{"value": true}, nil)
	}
	return p
}

// open loads url and waits for its load event.
func (p *tab) open(url string) {
	p.b.t.Helper()
	var nav struct {
		ErrorText string `json:"errorText"`
	}
	p.b.call(p.session, "Page.navigate", map[string]any{"url": url}, &nav)
	if nav.ErrorText != "" {
		p.b.t.Fatalf("open %s: %s", url, nav.ErrorText)
	}
	p.b.await(p.session, "Page.loadEventFired", 30*time.Second)
}

// dom is the rendered document, as the browser holds it now.
func (p *tab) dom() string {
	p.b.t.Helper()
	var doc struct {
		Root struct {
			NodeID int `json:"nodeId"`
		} `json:"root"`
	}
	p.b.call(p.session, "DOM.getDocument", nil, &doc)
	var out struct {
		OuterHTML string `json:"outerHTML"`
	}
	p.b.call(p.session, "DOM.getOuterHTML", map[string]any{"nodeId": doc.Root.NodeID}, &out)
	return out.OuterHTML
}

// size is the size of the page's content in CSS pixels: wider than the
// screen, it scrolls sideways.
func (p *tab) size() (width, height float64) {
	p.b.t.Helper()
	var m struct {
		Content struct {
			Width  float64 `json:"width"`
			Height float64 `json:"height"`
		} `json:"cssContentSize"`
	}
	p.b.call(p.session, "Page.getLayoutMetrics", nil, &m)
	return m.Content.Width, m.Content.Height
}

// screenshot saves what the screen shows as a PNG; whole, the whole page
// as if the screen were as tall.
func (p *tab) screenshot(path string, whole bool) {
	p.b.t.Helper()
	params := map[string]any{"format": "png"}
	if whole {
		w, h := p.size()
		params["captureBeyondViewport"] = true
		params["clip"] = map[string]any{"x": 0, "y": 0, "width": w, "height": h, "scale": 1}
	}
	var shot struct {
		Data string `json:"data"`
	}
	p.b.call(p.session, "Page.captureScreenshot", params, &shot)
	png, err := base64.StdEncoding.DecodeString(shot.Data)
	if err != nil || len(png) < 1024 {
		p.b.t.Fatalf("screenshot: %d bytes, %v", len(png), err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.b.t.Fatal(err)
	}
}

// passTime lets d of the page's time pass at once (virtual time, which
// waits while the page fetches), so its timers run without the test
// sleeping.
func (p *tab) passTime(d time.Duration) {
	p.b.t.Helper()
	p.b.call(p.session, "Emulation.setVirtualTimePolicy", map[string]any{
		"policy": "pauseIfNetworkFetchesPending", "budget": d.Milliseconds(),
	}, nil)
	p.b.await(p.session, "Emulation.virtualTimeBudgetExpired", 60*time.Second)
}

package mailer

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/alertd/alertd/internal/metrics"
	"github.com/alertd/alertd/internal/outbox"
	"github.com/alertd/alertd/internal/smtptest"
	"github.com/alertd/alertd/internal/store"
)

// fastRetry keeps the tests quick while still going through the backoff.
var fastRetry = Retry{Initial: 20 * time.Millisecond, Max: 50 * time.Millisecond, GiveUpAfter: time.Minute}

// delivery is a Deliverer running against a real outbox in a temporary
// bbolt file and a real SMTP server.
type delivery struct {
	box     *outbox.Outbox
	metrics *metrics.Metrics
	logs    *syncBuffer
	idle    chan struct{} // receives each time the deliverer has nothing due
	stop    func()        // stops the deliverer and waits for Run to return
}

// startDelivererWith runs a deliverer over sessions parallel sessions.
func startDelivererWith(t *testing.T, srv *smtptest.Server, sessions int) *delivery {
	t.Helper()
	return startDelivererN(t, srv, SMTPOptions{Security: SecurityNone}, fastRetry, sessions)
}

func startDeliverer(t *testing.T, srv *smtptest.Server, o SMTPOptions, retry ...Retry) *delivery {
	t.Helper()
	return startDelivererN(t, srv, o, append(retry, fastRetry)[0], 1)
}

func startDelivererN(t *testing.T, srv *smtptest.Server, o SMTPOptions, retry Retry, sessions int, tweak ...func(*Deliverer)) *delivery {
	t.Helper()
	db, recovered, err := store.Open(filepath.Join(t.TempDir(), "alertd.db"))
	if err != nil || recovered != nil {
		t.Fatalf("open store: %v %+v", err, recovered)
	}
	t.Cleanup(func() { _ = db.Close() }) // after the deliverer stopped (cleanups run last-in first-out)
	d := &delivery{box: outbox.New(db), metrics: metrics.New(), logs: &syncBuffer{}, idle: make(chan struct{}, 1)}
	if o.Security == "" {
		o.Security = SecurityNone
	}
	tr, _ := transport(t, srv.Port, o)
	var more []Transport
	for range sessions - 1 {
		m, _ := transport(t, srv.Port, o)
		more = append(more, m)
	}
	dl := &Deliverer{
		Queue: d.box, Transport: tr, Parallel: more, Retry: retry, Metrics: d.metrics,
		Log: debugLogger(d.logs), Now: time.Now,
		OnIdle: func() {
			select {
			case d.idle <- struct{}{}:
			default:
			}
		},
	}
	for _, f := range tweak {
		f(dl)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- dl.Run(ctx) }()
	d.stop = sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("deliverer: %v", err)
		}
	})
	t.Cleanup(d.stop)
	return d
}

// settle waits until the outbox statistics satisfy cond, then stops the
// deliverer: the attempt that got there has finished (metrics and logs
// are updated around the outbox write, not atomically with it).
func (d *delivery) settle(t *testing.T, what string, cond func(outbox.Stats) bool) outbox.Stats {
	t.Helper()
	st := d.waitQueue(t, what, cond)
	d.stop()
	return st
}

// enqueue queues the test mail, created at created, due now.
func (d *delivery) enqueue(t *testing.T, created time.Time, to ...string) *outbox.Entry {
	t.Helper()
	msg := message(t, to...)
	e := &outbox.Entry{Rule: "invernadero", Series: "sensors/salon", From: user, To: to, Subject: subject,
		MessageID: messageID(t, msg), Message: msg, Created: created, Next: time.Now()}
	if err := d.box.Enqueue(e); err != nil {
		t.Fatal(err)
	}
	return e
}

// waitQueue waits, woken by the deliverer going idle, until the outbox
// statistics satisfy cond.
func (d *delivery) waitQueue(t *testing.T, what string, cond func(outbox.Stats) bool) outbox.Stats {
	t.Helper()
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for {
		st, err := d.box.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if cond(st) {
			return st
		}
		select {
		case <-d.idle:
		case <-timeout.C:
			t.Fatalf("outbox never reached %s: %+v\nlogs:\n%s", what, st, d.logs.String())
		}
	}
}

func messageID(t *testing.T, msg []byte) string {
	t.Helper()
	h := parseMail(t, msg)
	id, err := h.MessageID()
	if err != nil || id == "" {
		t.Fatalf("no Message-ID: %v", err)
	}
	return id
}

func TestDelivererRetries451AndDeliversOnce(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	srv.Fail("DATA", 2, 451, [3]int{4, 3, 0}, "Requested action aborted: local error")
	d := startDeliverer(t, srv, SMTPOptions{})
	e := d.enqueue(t, time.Now(), "ops@example.org")

	st := d.settle(t, "empty", func(s outbox.Stats) bool { return s.Pending == 0 })
	if st.Dead != 0 {
		t.Errorf("%d dead letters", st.Dead)
	}
	msgs := srv.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d copies delivered, want exactly 1", len(msgs))
	}
	if id, _ := msgs[0].Header.MessageID(); id != e.MessageID || msgs[0].Subject != subject {
		t.Errorf("delivered %q with Message-ID %q, want the queued bytes (%q)", msgs[0].Subject, id, e.MessageID)
	}
	if n := count(srv.Commands(), "DATA"); n != 3 {
		t.Errorf("%d DATA attempts, want 3 (two 451s, then 250)", n)
	}
	m := d.metrics
	for name, got := range map[string]float64{
		"sent": testutil.ToFloat64(m.MailSent), "failed temporary": testutil.ToFloat64(m.MailFailed.WithLabelValues("temporary")),
		"attempts 4xx": testutil.ToFloat64(m.MailAttempts.WithLabelValues("4xx")), "attempts 2xx": testutil.ToFloat64(m.MailAttempts.WithLabelValues("2xx")),
		"dead": testutil.ToFloat64(m.MailDead),
	} {
		want := map[string]float64{"sent": 1, "failed temporary": 2, "attempts 4xx": 2, "attempts 2xx": 1, "dead": 0}[name]
		if got != want {
			t.Errorf("metric %s = %v, want %v", name, got, want)
		}
	}
}

func TestDelivererBuries550AtData(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	srv.Fail("DATA", -1, 550, [3]int{5, 7, 1}, "Message rejected as spam")
	d := startDeliverer(t, srv, SMTPOptions{})
	e := d.enqueue(t, time.Now(), "ops@example.org")

	d.settle(t, "one dead letter", func(s outbox.Stats) bool { return s.Dead == 1 && s.Pending == 0 })
	_, dead, err := d.box.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 1 || dead[0].ID != e.ID || dead[0].Attempts != 1 || dead[0].DeadAt.IsZero() ||
		!strings.Contains(dead[0].LastError, "550") || !strings.Contains(dead[0].LastError, "Message rejected as spam") {
		t.Fatalf("dead letters %+v", dead)
	}
	if !slices.Equal(dead[0].To, []string{"ops@example.org"}) {
		t.Errorf("dead letter keeps recipients %v, want them for outbox retry", dead[0].To)
	}
	if n := count(srv.Commands(), "DATA"); n != 1 {
		t.Errorf("%d DATA attempts: a 5xx must not be retried", n)
	}
	if got := testutil.ToFloat64(d.metrics.MailDead); got != 1 {
		t.Errorf("alertd_mail_dead_total = %v, want 1", got)
	}
	if got := testutil.ToFloat64(d.metrics.MailFailed.WithLabelValues("permanent")); got != 1 {
		t.Errorf("alertd_mail_failed_total{kind=permanent} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(d.metrics.MailSent); got != 0 {
		t.Errorf("alertd_mail_sent_total = %v, want 0", got)
	}
}

// A recipient deferred with 450 gets the mail on a later attempt; the one
// that accepted it the first time does not get a second copy.
func TestDelivererRetriesOnlyDeferredRecipients(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	srv.FailRcpt("later@example.org", 1, 450, [3]int{4, 2, 1}, "try again later")
	d := startDeliverer(t, srv, SMTPOptions{})
	e := d.enqueue(t, time.Now(), "ops@example.org", "later@example.org")

	d.settle(t, "empty", func(s outbox.Stats) bool { return s.Pending == 0 })
	msgs := srv.Messages()
	if len(msgs) != 2 || !slices.Equal(msgs[0].To, []string{"ops@example.org"}) || !slices.Equal(msgs[1].To, []string{"later@example.org"}) {
		t.Fatalf("deliveries %v, want ops then later, one copy each", recipients(msgs))
	}
	for _, m := range msgs {
		if id, _ := m.Header.MessageID(); id != e.MessageID {
			t.Errorf("Message-ID %q, want the same %q in both copies", id, e.MessageID)
		}
	}
}

func recipients(msgs []smtptest.Message) [][]string {
	var out [][]string
	for _, m := range msgs {
		out = append(out, m.To)
	}
	return out
}

// A rejected login is the operator's problem: the mail stays queued, the
// problem is logged once (not at every retry) with the server's words and
// never the password, and delivery resumes by itself once it is fixed.
func TestDelivererKeepsMailQueuedWhileLoginFails(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.StartTLS, Users: users})
	srv.Fail("AUTH", 3, 535, [3]int{5, 7, 8}, "Username and Password not accepted")
	d := startDeliverer(t, srv, login(srv, SMTPOptions{Security: SecurityStartTLS}))
	d.enqueue(t, time.Now(), "ops@example.org")

	d.settle(t, "empty", func(s outbox.Stats) bool { return s.Pending == 0 })
	if st, _ := d.box.Stats(); st.Dead != 0 {
		t.Errorf("%d dead letters: a login failure must not bury mail", st.Dead)
	}
	if n := len(srv.Messages()); n != 1 {
		t.Errorf("%d copies delivered, want 1", n)
	}
	if got := testutil.ToFloat64(d.metrics.MailFailed.WithLabelValues("auth")); got != 3 {
		t.Errorf("alertd_mail_failed_total{kind=auth} = %v, want 3", got)
	}
	logs := d.logs.String()
	if n := strings.Count(logs, "fix the smtp configuration"); n != 1 {
		t.Errorf("the login problem was logged %d times, want once:\n%s", n, logs)
	}
	if !strings.Contains(logs, "Username and Password not accepted") || !strings.Contains(logs, "works again") {
		t.Errorf("logs do not say what failed and that it recovered:\n%s", logs)
	}
	if strings.Contains(logs, password) {
		t.Errorf("the password appears in the logs:\n%s", logs)
	}
}

func TestDelivererGivesUpOnOldMail(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	srv.Fail("DATA", -1, 451, [3]int{4, 3, 0}, "try later")
	d := startDeliverer(t, srv, SMTPOptions{})
	d.enqueue(t, time.Now().Add(-2*fastRetry.GiveUpAfter), "ops@example.org")

	d.settle(t, "one dead letter", func(s outbox.Stats) bool { return s.Dead == 1 })
	_, dead, _ := d.box.List()
	if len(dead) != 1 || !strings.HasPrefix(dead[0].LastError, "gave up after 1m0s") || !strings.Contains(dead[0].LastError, "451") {
		t.Errorf("dead letters %+v", dead)
	}
	if got := testutil.ToFloat64(d.metrics.MailDead); got != 1 {
		t.Errorf("alertd_mail_dead_total = %v, want 1", got)
	}
}

// A login that keeps failing is the configuration's fault, not the mail's:
// even past give_up_after the mail stays queued until it is fixed.
func TestDelivererNeverBuriesMailForALoginFailure(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.StartTLS, Users: users})
	srv.Fail("AUTH", 3, 535, [3]int{5, 7, 8}, "Username and Password not accepted")
	d := startDeliverer(t, srv, login(srv, SMTPOptions{Security: SecurityStartTLS}))
	d.enqueue(t, time.Now().Add(-2*fastRetry.GiveUpAfter), "ops@example.org") // older than give_up_after
	d.settle(t, "delivered", func(s outbox.Stats) bool { return s.Pending == 0 })
	if st, _ := d.box.Stats(); st.Dead != 0 || len(srv.Messages()) != 1 {
		t.Errorf("dead %d, delivered %d: want the mail delivered once the login works", st.Dead, len(srv.Messages()))
	}
}

// After a failure of the server the queue waits out the backoff; an
// operator's "outbox retry" makes it try at once.
func TestOperatorRetryCutsTheWaitShort(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	srv.SetDown(true)
	d := startDeliverer(t, srv, SMTPOptions{}, Retry{Initial: time.Hour, Max: time.Hour, GiveUpAfter: 48 * time.Hour})
	e := d.enqueue(t, time.Now(), "ops@example.org")
	d.waitQueue(t, "one failed attempt", func(outbox.Stats) bool {
		_, _, err := d.box.Due(time.Now(), 1)
		pending, _, _ := d.box.List()
		return err == nil && len(pending) == 1 && pending[0].Attempts == 1
	})
	srv.SetDown(false)
	if err := d.box.Retry(e.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	srv.WaitMessages(t, 1, 5*time.Second)
}

// smtp.max_connections: a backlog is spread over several sessions, each
// mail delivered once, never more sessions than allowed.
func TestDelivererParallelSessions(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	srv.SetDataDelay(5 * time.Millisecond) // a server slow enough for sessions to overlap
	d := startDelivererWith(t, srv, 4)
	const n = 60
	for range n {
		d.enqueue(t, time.Now(), "ops@example.org")
	}
	d.settle(t, "drained", func(s outbox.Stats) bool { return s.Pending == 0 })
	ids := map[string]int{}
	for _, m := range srv.Messages() {
		ids[m.Header.Get("Message-Id")]++
	}
	if len(ids) != n || len(srv.Messages()) != n {
		t.Errorf("%d mails, %d distinct, want %d once each", len(srv.Messages()), len(ids), n)
	}
	if c := srv.Conns(); c < 2 || c > 4 {
		t.Errorf("%d sessions, want 2 to 4", c)
	}
}

// A mail that reached two recipients and got a 5xx for the third leaves a
// dead letter for the third, with the server's words, that an operator's
// retry sends to the third alone: a refused recipient is never only a log
// line.
func TestDelivererBuriesARecipientRefusedPermanently(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	srv.FailRcpt("gone@example.org", 1, 550, [3]int{5, 1, 1}, "mailbox unavailable")
	d := startDeliverer(t, srv, SMTPOptions{})
	e := d.enqueue(t, time.Now(), "ops@example.org", "boss@example.org", "gone@example.org")

	d.waitQueue(t, "one dead letter, nothing pending", func(s outbox.Stats) bool { return s.Pending == 0 && s.Dead == 1 })
	msgs := srv.Messages()
	if len(msgs) != 1 || !slices.Equal(msgs[0].To, []string{"ops@example.org", "boss@example.org"}) {
		t.Fatalf("deliveries %v, want one copy to ops and boss", recipients(msgs))
	}
	_, dead, err := d.box.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 1 {
		t.Fatalf("dead letters %d, want 1", len(dead))
	}
	dl := dead[0]
	if !slices.Equal(dl.To, []string{"gone@example.org"}) || !strings.Contains(dl.LastError, "550") ||
		!strings.Contains(dl.LastError, "mailbox unavailable") || dl.MessageID != e.MessageID || dl.ID == e.ID {
		t.Fatalf("dead letter %+v: want gone@ only, the server's 550 words, the same Message-ID, an id of its own", dl)
	}
	if got := testutil.ToFloat64(d.metrics.MailDead); got != 1 {
		t.Errorf("alertd_mail_dead_total %v, want 1", got)
	}

	if err := d.box.Retry(dl.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	d.settle(t, "retried dead letter delivered", func(s outbox.Stats) bool { return s.Pending == 0 && s.Dead == 0 })
	msgs = srv.Messages()
	if len(msgs) != 2 || !slices.Equal(msgs[1].To, []string{"gone@example.org"}) {
		t.Fatalf("deliveries %v, want the retry to reach gone@ alone", recipients(msgs))
	}
}

// A mail that follows the last within Linger goes over the same session;
// once Linger has passed with nothing to send the session is closed, and
// the next mail opens a new one.
func TestIdleSessionLingersForTheNextMailThenCloses(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	d := startDelivererN(t, srv, SMTPOptions{Security: SecurityNone}, fastRetry, 1, func(dl *Deliverer) { dl.Linger = 700 * time.Millisecond })
	delivered := func(n int) {
		t.Helper()
		d.waitQueue(t, fmt.Sprintf("%d delivered", n), func(outbox.Stats) bool { return len(srv.Messages()) == n })
	}
	d.enqueue(t, time.Now(), "ops@example.org")
	delivered(1)
	time.Sleep(100 * time.Millisecond)
	d.enqueue(t, time.Now(), "ops@example.org")
	d.box.Kick()
	delivered(2)
	if c := srv.Conns(); c != 1 {
		t.Fatalf("two mails 100 ms apart used %d sessions, want 1 kept open between them", c)
	}
	time.Sleep(2 * time.Second)
	d.enqueue(t, time.Now(), "ops@example.org")
	d.box.Kick()
	delivered(3)
	if c := srv.Conns(); c != 2 {
		t.Fatalf("a mail 2 s after the last used %d sessions in all, want a new one (the idle one closed after Linger)", c)
	}
}

// failingDone is the outbox with removals that fail a number of times (a
// disk error; in cluster mode, the partition's state out of reach).
type failingDone struct {
	*outbox.Outbox
	mu    sync.Mutex
	fails int
	calls int
}

func (q *failingDone) Done(id uint64) error {
	q.mu.Lock()
	q.calls++
	fail := q.fails > 0
	if fail {
		q.fails--
	}
	q.mu.Unlock()
	if fail {
		return fmt.Errorf("commit partition 3: context deadline exceeded")
	}
	return q.Outbox.Done(id)
}

// A mail delivered whose removal from the outbox fails is not sent again
// while the removal is retried (it was, in a tight loop: thousands of
// copies a second): one copy reaches the server, and the mail leaves the
// outbox once a removal succeeds.
func TestDeliveredMailWhoseRemovalFailsIsNotSentAgain(t *testing.T) {
	srv := smtptest.Start(t, smtptest.Options{})
	var q *failingDone
	d := startDelivererN(t, srv, SMTPOptions{Security: SecurityNone}, fastRetry, 1, func(dl *Deliverer) {
		q = &failingDone{Outbox: dl.Queue.(*outbox.Outbox), fails: 2}
		dl.Queue = q
	})
	d.enqueue(t, time.Now(), "ops@example.org")
	d.settle(t, "the mail removed", func(st outbox.Stats) bool { return st.Pending == 0 })
	if n := len(srv.Messages()); n != 1 {
		t.Fatalf("%d copies delivered, want 1", n)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.calls != 3 {
		t.Errorf("%d removals tried, want 3 (two failed, then done)", q.calls)
	}
}

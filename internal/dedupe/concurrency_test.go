package dedupe

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/alertd/alertd/internal/store"
)

// Two series of one rule admitted at once while one held-back count is
// stored: only one of their mails may report it, and the count must not
// wrap around.
func TestConcurrentAdmissionsReportTheHeldBackCountOnce(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "s.db"))
	defer db.Close()
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	g := New(db, clk.now)
	c := func(s string) Candidate { return Candidate{Rule: "hot", Series: s, Cooldown: time.Hour} }
	noop := func(*store.Tx, uint64) error { return nil }
	if v, _ := g.Admit(c("a"), noop); !v.Admitted {
		t.Fatal("a")
	}
	if v, _ := g.Admit(c("a"), noop); v.Admitted { // held: the rule's count is 1
		t.Fatal("a again")
	}
	inB, releaseB := make(chan struct{}), make(chan struct{})
	resB := make(chan Verdict)
	go func() {
		v, _ := g.Admit(c("b"), func(*store.Tx, uint64) error {
			select {
			case <-inB:
			default:
				close(inB)
				<-releaseB
			}
			return nil
		})
		resB <- v
	}()
	<-inB // B has read the count and sits in its transaction
	resC := make(chan Verdict)
	go func() { v, _ := g.Admit(c("c"), noop); resC <- v }()
	time.Sleep(50 * time.Millisecond) // C waits for the writer lock
	close(releaseB)
	vb, vc := <-resB, <-resC
	t.Logf("b suppressed=%d c suppressed=%d", vb.Suppressed, vc.Suppressed)
	v, _ := g.Admit(c("d"), noop)
	if total := vb.Suppressed + vc.Suppressed + v.Suppressed; total != 1 {
		t.Errorf("the one held-back notification was reported %d times (b %d, c %d, next %d)", total, vb.Suppressed, vc.Suppressed, v.Suppressed)
	}
}

// For a group_wait rule each notification is admitted as a member (the
// cooldown only) and the group mails under the rule's rate limit.
func TestGroupMembersLeaveTheRateWindowToGroupMails(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "s.db"))
	defer db.Close()
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	g := New(db, clk.now)
	noop := func(*store.Tx, uint64) error { return nil }
	group := Candidate{Rule: "storm", Series: "\x00group", Limit: 2, Per: time.Hour}
	sent := 0
	for i := range 10 {
		member := Candidate{Rule: "storm", Series: "dev" + string(rune('a'+i)), Cooldown: 10 * time.Minute, Member: true}
		if v, _ := g.Admit(member, noop); !v.Admitted {
			t.Fatalf("member %d held", i)
		}
		clk.add(30 * time.Second) // group_wait
		if v, _ := g.Admit(group, noop); v.Admitted {
			sent++
		}
	}
	if sent > 2 {
		t.Errorf("rate limit of group mails not enforced: %d > 2", sent)
	}
}

package alerts

import (
	"container/heap"
	"time"
)

// schedule makes sure the series has a heap entry no later than its due
// time. An entry earlier than needed is kept: when it pops, the series is
// rescheduled. So a chatty device costs no heap work per reading. Each
// series has at most one entry, so the heap never holds more than the
// table and an evicted series leaves nothing behind.
func (t *Tracker) schedule(s *Series) {
	due := t.due(s)
	if due.IsZero() {
		t.unschedule(s)
		return
	}
	switch {
	case s.b.heapAt == 0:
		s.b.timerAt = due
		heap.Push(&t.timers, s)
	case s.b.timerAt.After(due):
		s.b.timerAt = due
		heap.Fix(&t.timers, s.b.heapAt-1)
	default:
		return
	}
	if t.timers[0] == s {
		select {
		case t.wake <- struct{}{}:
		default:
		}
	}
}

// unschedule removes the series' heap entry, if it has one.
func (t *Tracker) unschedule(s *Series) {
	if s.b.heapAt > 0 {
		heap.Remove(&t.timers, s.b.heapAt-1)
	}
	s.b.timerAt = time.Time{}
}

// timerHeap orders series by when their timer pops; each series knows its
// index (book.heapAt), so an entry can be moved or removed in O(log n).
type timerHeap []*Series

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].b.timerAt.Before(h[j].b.timerAt) }
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].b.heapAt, h[j].b.heapAt = i+1, j+1
}
func (h *timerHeap) Push(x any) {
	s := x.(*Series)
	*h = append(*h, s)
	s.b.heapAt = len(*h)
}
func (h *timerHeap) Pop() any {
	old := *h
	s := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	s.b.heapAt = 0
	return s
}

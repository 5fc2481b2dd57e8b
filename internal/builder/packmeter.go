package builder

import (
	"sync"
	"sync/atomic"
	"time"
)

// packMeter is a build's pack progress. Its total is the bytes to pack:
// the uncompressed tar bytes (archive.Listing.TarSize) of the layers the
// layer cache lacks; a layer found in the cache is left out of it. Its
// count is the tar bytes written so far, as archive writes them
// (archive.Options.Progress), summed over the layers packed at once. An
// image whose layers are zstd-compressed is packed twice (its Docker
// manifest lists gzip layers of the same tars): the second pass adds its
// layers to the total when it starts.
//
// It reports at most one event per interval, from whichever packing
// goroutine finds the interval over, plus a last one when the pack is
// done, so that thousands of small writes make a few events a second.
// The methods of a nil meter do nothing.
type packMeter struct {
	report   func(done, total int64) // in order, one at a time
	now      func() time.Time
	interval time.Duration
	// hold, if set, is called once, on the goroutine whose bytes make
	// half the total, after a report of them (Builder.HoldPack).
	hold func()

	total, done atomic.Int64
	next        atomic.Int64 // UnixNano before which no report is made
	mu          sync.Mutex
	held        atomic.Bool
}

// packEvents is how often at most a pack reports its progress.
const packEvents = 250 * time.Millisecond

// newPackMeter reports to p, on the system clock.
func newPackMeter(p *progress, hold func()) *packMeter {
	return &packMeter{
		report: func(done, total int64) {
			p.publish(Event{Kind: "progress", Phase: "pack", Bytes: done, Total: total})
		},
		now: time.Now, interval: packEvents, hold: hold,
	}
}

// grow adds n bytes to pack to the total.
func (m *packMeter) grow(n int64) {
	if m != nil {
		m.total.Add(n)
	}
}

// add counts n bytes packed, and reports if the interval is over.
func (m *packMeter) add(n int64) {
	if m == nil {
		return
	}
	done := m.done.Add(n)
	if m.hold != nil && 2*done >= m.total.Load() && !m.held.Swap(true) {
		m.emit()
		m.hold()
		return
	}
	now, next := m.now().UnixNano(), m.next.Load()
	if now < next || !m.next.CompareAndSwap(next, now+int64(m.interval)) {
		return // too soon, or another goroutine reports
	}
	m.emit()
}

// finish makes the last report, if there was anything to pack.
func (m *packMeter) finish() {
	if m != nil && m.total.Load() > 0 {
		m.emit()
	}
}

func (m *packMeter) emit() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.report(m.done.Load(), m.total.Load())
}

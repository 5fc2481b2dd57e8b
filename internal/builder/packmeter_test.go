package builder

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nixery/nixery/internal/archive"
	"github.com/nixery/nixery/internal/storage"
)

// testMeter is a meter on a clock the test moves, recording its reports.
type testMeter struct {
	*packMeter
	clock   time.Time
	mu      sync.Mutex
	reports [][2]int64
}

func newTestMeter() *testMeter {
	tm := &testMeter{clock: time.Unix(1000, 0)}
	tm.packMeter = &packMeter{interval: packEvents,
		now: func() time.Time { return tm.clock },
		report: func(done, total int64) {
			tm.mu.Lock()
			defer tm.mu.Unlock()
			tm.reports = append(tm.reports, [2]int64{done, total})
		}}
	return tm
}

// At most one report per interval, however many writes; the last one
// always.
func TestPackMeterThrottles(t *testing.T) {
	m := newTestMeter()
	held := 0
	m.hold = func() { held++ }
	m.grow(10_000)
	for i := range 100 { // 100 writes of 100 bytes over 1 s: 10 ms apart
		m.add(100)
		m.clock = m.clock.Add(10 * time.Millisecond)
		if i == 49 {
			m.grow(0)
		}
	}
	m.finish()
	// Reports every 250 ms, and one more at half the total, where the
	// hold is.
	want := [][2]int64{{100, 10_000}, {2600, 10_000}, {5000, 10_000}, {5100, 10_000}, {7600, 10_000}, {10_000, 10_000}}
	if !slices.Equal(m.reports, want) {
		t.Errorf("reports %v, want %v", m.reports, want)
	}
	if held != 1 {
		t.Errorf("hold called %d times, want once", held)
	}
	// Nothing to pack (every layer cached): no report at all.
	empty := newTestMeter()
	empty.finish()
	if len(empty.reports) != 0 {
		t.Errorf("an empty pack reported %v", empty.reports)
	}
	var none *packMeter // a Packer without a meter
	none.grow(1)
	none.add(1)
	none.finish()
}

// The packer's meter: the total is the tar bytes of the layers the cache
// lacks (cached ones left out), and the count reaches it exactly.
func TestPackerMeters(t *testing.T) {
	store, err := storage.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cache := &memCache{layers: map[string]archive.Layer{}}
	pk := Packer{Storage: store, Limit: 2, Cache: cache}
	if _, err := pk.Pack(context.Background(), []Layer{fileLayer("cached", "x")}); err != nil {
		t.Fatal(err)
	}
	m := newTestMeter()
	pk.meter = m.packMeter
	layers, err := pk.Pack(context.Background(), []Layer{fileLayer("cached", "x"), fileLayer("big", strings.Repeat("b", 1<<20))})
	if err != nil {
		t.Fatal(err)
	}
	m.finish()
	last := m.reports[len(m.reports)-1]
	// fileLayer's List says the content's size: the meter counts no
	// more than a layer's size says, and all of it once packed.
	if last != [2]int64{1 << 20, 1 << 20} || layers[1].TarSize <= 1<<20 {
		t.Errorf("last report %v, tar %d; want the big layer's listed size, done", last, layers[1].TarSize)
	}
	for _, r := range m.reports {
		if r[0] > r[1] {
			t.Errorf("report %v counts more than the total", r)
		}
	}
}

// A build keeps only its latest progress event: a late subscriber gets
// it, and progress never pushes out log lines.
func TestProgressKeepsTheLatest(t *testing.T) {
	p := &progress{}
	p.phase("pack", "")
	for i := range 3 * maxEvents {
		p.publish(Event{Kind: "progress", Phase: "pack", Bytes: int64(i), Total: 1 << 40})
	}
	p.line("a line")
	past, _ := p.subscribe()
	var progress []Event
	for _, e := range past {
		if e.Kind == "progress" {
			progress = append(progress, e)
		}
	}
	if len(past) != 3 || len(progress) != 1 || progress[0].Bytes != 3*maxEvents-1 || past[2].Message != "a line" {
		t.Errorf("history %+v", past)
	}
}

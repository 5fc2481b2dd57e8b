package builder

import (
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/nixery/nixery/internal/fault"
	"github.com/nixery/nixery/internal/image"
	"github.com/nixery/nixery/internal/manifest"
	"github.com/nixery/nixery/internal/redact"
)

// The operator's page of recent builds (/builds, /api/builds in package
// web) shows the builds of this process: the last maxHistory that
// ended, and those in flight now, running (holding a slot) or waiting
// (for a slot, or for the replica that builds the image). It lives in
// memory only, a fixed amount of it; each replica shows its own builds.
const (
	// maxHistory is how many finished builds are kept.
	maxHistory = 200
	// maxShownError bounds the error kept of a build.
	maxShownError = 4 << 10
	// maxPhases bounds the phases a build records (a build has five;
	// one that waited for another replica may see them twice).
	maxPhases = 16
	// maxActive bounds the builds in flight listed.
	maxActive = 500
)

// Builds is what the page of recent builds shows.
type Builds struct {
	Running  []Active `json:"running"`  // builds holding a slot, oldest first
	Waiting  []Active `json:"waiting"`  // builds waiting, oldest first
	Finished []Record `json:"finished"` // newest first
	Kept     int      `json:"kept"`     // how many finished builds are kept at most
}

// Active is a build in flight.
type Active struct {
	Image   string      `json:"image"` // the image name
	Tag     string      `json:"tag"`
	Started time.Time   `json:"started"`
	Seconds float64     `json:"seconds"`         // since it started
	Phase   string      `json:"phase,omitempty"` // the phase going on; "" before the first
	Phases  []PhaseTime `json:"phases"`          // the phases so far, the last one until now
}

// Record is a build that ended.
type Record struct {
	Image   string      `json:"image"`
	Tag     string      `json:"tag"`
	Result  string      `json:"result"` // "ok", "failed" or "cancelled"
	Started time.Time   `json:"started"`
	Seconds float64     `json:"seconds"` // from its start to its end
	Phases  []PhaseTime `json:"phases"`
	// Error is the build's error, its URLs' credentials redacted
	// (package redact), cut at 4 KiB.
	Error  string        `json:"error,omitempty"`
	Digest digest.Digest `json:"digest,omitempty"` // "ok": the OCI manifest's digest
}

// PhaseTime is a phase of a build and how long it took: from its start
// to the next phase's, or to the build's end.
type PhaseTime struct {
	Phase   string  `json:"phase"`
	Seconds float64 `json:"seconds"`
}

// phaseStart is a phase of a build and when it started.
type phaseStart struct {
	phase string
	at    time.Time
}

// setRunning says that the build holds a slot now.
func (p *progress) setRunning() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.running = true
}

// snapshot is what the history shows of a build at a moment.
type snapshot struct {
	started time.Time
	phases  []PhaseTime // until the moment
	current string      // the phase going on
	running bool        // it holds a slot
	ended   bool        // its final event is published
}

// snapshot returns when the build started, its phases with their
// durations until end, and its state.
func (p *progress) snapshot(end time.Time) snapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := snapshot{started: p.started, phases: make([]PhaseTime, len(p.phases)), current: p.current, running: p.running, ended: p.done}
	for i, ph := range p.phases {
		until := end
		if i+1 < len(p.phases) {
			until = p.phases[i+1].at
		}
		t.phases[i] = PhaseTime{Phase: ph.phase, Seconds: until.Sub(ph.at).Seconds()}
	}
	if t.started.IsZero() {
		t.started = end // not even queued yet
	}
	return t
}

// record is what the history keeps of a build that ended with img or
// err, just before its final event.
func (p *progress) record(req *image.Request, img *Image, err error) Record {
	end := time.Now().UTC()
	t := p.snapshot(end)
	r := Record{Image: req.Name, Tag: req.Tag, Result: "ok", Started: t.started, Seconds: end.Sub(t.started).Seconds(), Phases: t.phases}
	switch {
	case err == nil:
		r.Digest = img.Manifests[manifest.OCIManifest].Digest
		return r
	case fault.Of(err).Kind == fault.Canceled:
		r.Result = "cancelled"
	default:
		r.Result = "failed"
	}
	r.Error = shownError(err)
	return r
}

// shownError is err as the page of builds shows it: credentials in
// URLs redacted, at most maxShownError bytes.
func shownError(err error) string {
	msg := redact.URLs(err.Error())
	if len(msg) <= maxShownError {
		return msg
	}
	// Cut at a character boundary; a URL cut short is masked whole.
	return redact.Cut(strings.ToValidUTF8(msg[:maxShownError], "")) + " …"
}

// history is the last maxHistory finished builds, a ring.
type history struct {
	mu      sync.Mutex
	records []Record
	next    int // where the next record goes once the ring is full
}

func (h *history) add(r Record) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.records) < maxHistory {
		h.records = append(h.records, r)
		return
	}
	h.records[h.next] = r
	h.next = (h.next + 1) % maxHistory
}

// list returns the records, newest first.
func (h *history) list() []Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Record, 0, len(h.records))
	out = append(out, h.records[h.next:]...)
	out = append(out, h.records[:h.next]...)
	slices.Reverse(out)
	return out
}

// Builds returns the builds of this process: those in flight now and
// the last ones that ended.
func (b *Builder) Builds() Builds {
	now := time.Now().UTC()
	out := Builds{Running: []Active{}, Waiting: []Active{}, Finished: b.history.list(), Kept: maxHistory}
	for _, f := range b.flights.list() {
		t := f.p.snapshot(now)
		if t.ended {
			continue // in the history already
		}
		a := Active{Image: f.req.Name, Tag: f.req.Tag, Started: t.started, Seconds: now.Sub(t.started).Seconds(), Phase: t.current, Phases: t.phases}
		if t.running {
			out.Running = append(out.Running, a)
		} else {
			out.Waiting = append(out.Waiting, a)
		}
	}
	oldest := func(a, b Active) int { return a.Started.Compare(b.Started) }
	slices.SortFunc(out.Running, oldest)
	slices.SortFunc(out.Waiting, oldest)
	out.Running = out.Running[:min(len(out.Running), maxActive)]
	out.Waiting = out.Waiting[:min(len(out.Waiting), maxActive)]
	return out
}

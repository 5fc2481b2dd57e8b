package builder

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/nixery/nixery/internal/bounded"
	"github.com/nixery/nixery/internal/image"
	"github.com/nixery/nixery/internal/manifest"
	"github.com/nixery/nixery/internal/metadata"
	"github.com/nixery/nixery/internal/nix"
)

// Event is one step of a build, for live progress (the web page's
// server-sent events and `nixery build`).
type Event struct {
	Time time.Time `json:"time"`
	// Kind is "queued", "phase" (a phase starts), "log" (a line of
	// Nix's output), "progress" (of the pack phase: Bytes of Total),
	// "done" (the image is ready) or "error" (the build failed). "done"
	// and "error" are final.
	Kind    string        `json:"kind"`
	Phase   string        `json:"phase,omitempty"`   // one of Phases
	Message string        `json:"message,omitempty"` // log line, error or summary
	Digest  digest.Digest `json:"digest,omitempty"`  // "done": the OCI manifest's digest
	// Bytes and Total ("progress"): the uncompressed tar bytes packed so
	// far and to pack, of the layers the layer cache lacks (see
	// packMeter). At most four a second, and a last one with Bytes =
	// Total when the pack is done; a build keeps only the latest.
	Bytes int64 `json:"bytes,omitempty"`
	Total int64 `json:"total,omitempty"`
	// Suggestions ("error" of unknown packages): close names of the
	// package set for each unknown one, best first (see Builder.Suggest).
	Suggestions []Suggestion `json:"suggestions,omitempty"`
}

// Suggestion is a close name for an unknown package, and the image that
// has it instead.
type Suggestion struct {
	Package string `json:"package"` // the unknown name
	Name    string `json:"name"`    // a close name, as an image name spells it
	// Image is the reference of the image with Name in place of
	// Package (image.Request.Replacing); "" if the image name does not
	// spell Package as one of its components.
	Image string `json:"image,omitempty"`
}

// Final reports whether e ends a build's events.
func (e Event) Final() bool { return e.Kind == "done" || e.Kind == "error" }

// Phases lists the phases of a build in order.
//
//	realise   Nix evaluates the package set and builds (or fetches) the packages
//	graph     Nix reports the closure with sizes and references
//	layers    the closure is grouped into layers
//	pack      layers are tarred, compressed, hashed and uploaded in one pass
//	manifest  the config, the manifests and their artifacts (SBOMs,
//	          provenance, signatures) are written
var Phases = []string{"realise", "graph", "layers", "pack", "manifest"}

// maxEvents bounds the events a build keeps for late subscribers; Nix
// can print many lines, and only the last ones matter then.
const maxEvents = 2000

// progress is the event history and the subscribers of one build.
type progress struct {
	mu     sync.Mutex
	events []Event
	subs   []chan Event
	done   bool
	// onPhase, if set, also hears every phase this build starts (the
	// holder of a fleet-wide claim publishes them for other replicas).
	onPhase func(phase string)
	current string // the phase going on

	// What the page of recent builds shows (history.go): when the
	// build started (its first event), the phases it started, and
	// whether it holds a slot (it runs; else it waits).
	started time.Time
	phases  []phaseStart
	running bool
}

// publish records e and hands it to the subscribers. A phase event for
// the phase going on is a log line of that phase: a phase starts once
// (the realise phase of a build that shared an evaluation started with
// the evaluation, before Nix realises).
func (p *progress) publish(e Event) {
	e.Time = time.Now().UTC()
	p.mu.Lock()
	if p.started.IsZero() {
		p.started = e.Time
	}
	if e.Kind == "phase" {
		if e.Phase == p.current {
			e.Kind = "log"
		} else if len(p.phases) < maxPhases {
			p.phases = append(p.phases, phaseStart{e.Phase, e.Time})
		}
		p.current = e.Phase
	}
	hook := p.onPhase
	p.mu.Unlock()
	if hook != nil && e.Kind == "phase" && e.Phase != "" {
		hook(e.Phase)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return
	}
	if e.Kind == "progress" {
		// Only the latest progress counts: a late subscriber gets it,
		// and progress never pushes out the lines that matter.
		p.events = slices.DeleteFunc(p.events, func(o Event) bool { return o.Kind == "progress" })
	}
	if len(p.events) >= maxEvents && e.Kind == "log" {
		// Keep the first lines and the phases; drop the oldest log line.
		for i := maxEvents / 2; i < len(p.events); i++ {
			if p.events[i].Kind == "log" {
				p.events = append(p.events[:i], p.events[i+1:]...)
				break
			}
		}
	}
	p.events = append(p.events, e)
	for _, ch := range p.subs {
		select {
		case ch <- e:
		default: // a slow reader misses lines, never blocks the build
		}
	}
	if e.Final() {
		p.done = true
		for _, ch := range p.subs {
			close(ch)
		}
		p.subs = nil
	}
}

// A build reports its progress only through these: phase (a phase
// starts), line (a log line of the phase going on) and note (a log line
// about the build as a whole); start publishes the first and the final
// events.

// phase announces that the phase name starts.
func (p *progress) phase(name, message string) {
	p.publish(Event{Kind: "phase", Phase: name, Message: message})
}

// line publishes a log line (of Nix, say) of the phase going on.
func (p *progress) line(message string) {
	p.mu.Lock()
	phase := p.current
	p.mu.Unlock()
	p.publish(Event{Kind: "log", Phase: phase, Message: message})
}

// note publishes a log line that belongs to no phase.
func (p *progress) note(message string) {
	p.publish(Event{Kind: "log", Message: message})
}

// mirrorPhases has every phase the build starts written into its claim,
// so that the replicas waiting for the build show them, until the
// function it returns is called.
func (p *progress) mirrorPhases(claim *metadata.Claim) (stop func()) {
	p.setPhaseHook(func(phase string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		claim.SetPhase(ctx, phase)
	})
	return func() { p.setPhaseHook(nil) }
}

func (p *progress) setPhaseHook(hook func(string)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.onPhase = hook
}

// subscribe returns the events so far and a channel of the ones to come
// (nil if the build is over).
func (p *progress) subscribe() ([]Event, chan Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	past := append([]Event(nil), p.events...)
	if p.done {
		return past, nil
	}
	ch := make(chan Event, 256)
	p.subs = append(p.subs, ch)
	return past, ch
}

func (p *progress) unsubscribe(ch chan Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, c := range p.subs {
		if c == ch {
			p.subs = append(p.subs[:i], p.subs[i+1:]...)
			close(ch)
			return
		}
	}
}

// flight is one build in progress, shared by every request for its key.
type flight struct {
	req  *image.Request // the request that started it
	p    *progress
	done chan struct{} // closed when img and err are set
	img  *Image
	err  error
}

// flights is the single flight of builds in this process. Unlike
// x/sync/singleflight it hands out the flight itself, with its progress,
// under the same lock that removes it when it ends, so a request that
// joins can never wait on a build that has already ended.
type flights struct {
	mu     sync.Mutex
	active map[string]*flight
}

// join returns the flight of key in progress, or nil.
func (t *flights) join(key string) *flight {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.active[key]
}

// start returns the flight of key, and started=true if the caller must
// run it (nobody else does).
func (t *flights) start(key string, req *image.Request) (f *flight, started bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if f := t.active[key]; f != nil {
		return f, false
	}
	if t.active == nil {
		t.active = map[string]*flight{}
	}
	f = &flight{req: req, p: &progress{}, done: make(chan struct{})}
	t.active[key] = f
	return f, true
}

// list returns the flights in progress.
func (t *flights) list() []*flight {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*flight, 0, len(t.active))
	for _, f := range t.active {
		out = append(out, f)
	}
	return out
}

// finish ends f: it leaves the table first, then its waiters are released.
// Its progress has published its final event already.
func (t *flights) finish(key string, f *flight, img *Image, err error) {
	t.mu.Lock()
	if t.active[key] == f {
		delete(t.active, key)
	}
	t.mu.Unlock()
	f.img, f.err = img, err
	close(f.done)
}

// DefaultFailureTTL is how long a failed build is remembered: requests for
// the same image within it get the same error without running Nix (a
// crawler or a client retrying a broken name costs nothing), and a fixed
// package set is picked up soon after.
const DefaultFailureTTL = 30 * time.Second

func (b *Builder) failureTTL() time.Duration {
	if b.FailureTTL > 0 {
		return b.FailureTTL
	}
	return DefaultFailureTTL
}

// ownFailure reports whether a build error is the image's own (unknown
// packages, a commit the repository lacks, a failing or timed-out Nix
// build), which the same request
// would meet again, rather than the moment's (a full queue, a storage
// outage, a cancellation). Of the unknown revisions, only the commit Nix
// found missing (Rev) is a build's: a tag the source resolves to nothing
// is answered before any build.
func ownFailure(err error) bool {
	var unknown *nix.UnknownPackagesError
	var noRev *nix.UnknownRevisionError
	var failed *nix.BuildError
	return errors.As(err, &unknown) || (errors.As(err, &noRev) && noRev.Rev != "") || errors.As(err, &failed) || errors.Is(err, nix.ErrTimeout)
}

// maxFailures bounds the remembered failures.
const maxFailures = 1024

// failures remembers failed builds by key until a time, the least
// recently used forgotten first beyond maxFailures. The zero value works.
type failures struct {
	once sync.Once
	m    *bounded.Map[string, failure]
}

type failure struct {
	err   error
	until time.Time
}

func (f *failures) memory() *bounded.Map[string, failure] {
	f.once.Do(func() { f.m = bounded.New[string, failure](maxFailures) })
	return f.m
}

func (f *failures) get(key string, now time.Time) error {
	e, ok := f.memory().Get(key)
	if !ok {
		return nil
	}
	if !now.Before(e.until) {
		f.m.DeleteIf(key, func(e failure) bool { return !now.Before(e.until) })
		return nil
	}
	return e.err
}

func (f *failures) put(key string, err error, until time.Time) {
	f.memory().Put(key, failure{err, until})
}

// Watch follows the build of the image req selects: it joins the build in
// flight or starts one (unless the image is cached, in which case the
// only event is "done", or failed within FailureTTL, in which case the
// only event is "error"). The channel gets the build's past events, then
// new ones as they happen, and is closed after the final event or when
// ctx ends. The build itself does not depend on ctx.
func (b *Builder) Watch(ctx context.Context, req *image.Request) (<-chan Event, error) {
	src, key, err := b.resolve(ctx, req)
	if err != nil {
		return nil, err
	}
	out := make(chan Event, 16)
	if _, d, ok, err := b.cachedManifest(ctx, key, manifest.OCIManifest); err != nil {
		return nil, err
	} else if ok {
		out <- Event{Time: time.Now().UTC(), Kind: "done", Message: "cached", Digest: d}
		close(out)
		return out, nil
	}
	f, err := b.start(ctx, key, req, src)
	if err != nil {
		if !ownFailure(err) {
			return nil, err
		}
		e := errorEvent(req, err)
		e.Time = time.Now().UTC()
		out <- e
		close(out)
		return out, nil
	}
	p := f.p
	past, live := p.subscribe()
	go func() {
		defer close(out)
		if live != nil {
			defer p.unsubscribe(live)
		}
		send := func(e Event) bool {
			select {
			case out <- e:
				return true
			case <-ctx.Done():
				return false
			}
		}
		for _, e := range past {
			if !send(e) {
				return
			}
		}
		for live != nil {
			select {
			case e, ok := <-live:
				if !ok || !send(e) {
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

package builder

import (
	"context"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/nixery/nixery/image"
	"github.com/nixery/nixery/manifest"
)

// Event is one step of a build, for live progress (the web page's
// server-sent events and `nixery build`).
type Event struct {
	Time time.Time `json:"time"`
	// Kind is "queued", "phase" (a phase starts), "log" (a line of
	// Nix's output), "done" (the image is ready) or "error" (the build
	// failed). "done" and "error" are final.
	Kind    string        `json:"kind"`
	Phase   string        `json:"phase,omitempty"`   // one of Phases
	Message string        `json:"message,omitempty"` // log line, error or summary
	Digest  digest.Digest `json:"digest,omitempty"`  // "done": the OCI manifest's digest
}

// Final reports whether e ends a build's events.
func (e Event) Final() bool { return e.Kind == "done" || e.Kind == "error" }

// Phases lists the phases of a build in order.
//
//	realise   Nix evaluates the package set and builds (or fetches) the packages
//	graph     Nix reports the closure with sizes and references
//	layers    the closure is grouped into layers
//	pack      layers are tarred, compressed, hashed and uploaded in one pass
//	manifest  the config and manifests are written
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
}

func (p *progress) publish(e Event) {
	e.Time = time.Now().UTC()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return
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

// progressTable holds the progress of builds in flight, and of the last
// few finished ones so that a page opened just after a build ended still
// shows its result.
type progressTable struct {
	mu       sync.Mutex
	active   map[string]*progress
	finished map[string]*progress
	order    []string
}

const keepFinished = 64

// get returns the unfinished progress for key, creating it if needed.
func (t *progressTable) get(key string) *progress {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.active == nil {
		t.active, t.finished = map[string]*progress{}, map[string]*progress{}
	}
	if p := t.active[key]; p != nil {
		return p
	}
	p := &progress{}
	t.active[key] = p
	return p
}

// finish moves the progress of key to the finished ones.
func (t *progressTable) finish(key string, p *progress) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.active[key] == p {
		delete(t.active, key)
	}
	if _, ok := t.finished[key]; !ok {
		t.order = append(t.order, key)
	}
	t.finished[key] = p
	if len(t.order) > keepFinished {
		delete(t.finished, t.order[0])
		t.order = t.order[1:]
	}
}

// Watch follows the build of the image req selects: it joins the build in
// flight or starts one (unless the image is cached, in which case the
// only event is "done"). The channel gets the build's past events, then
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
	p, _ := b.start(key, req, src)
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

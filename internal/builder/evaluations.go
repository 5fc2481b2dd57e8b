package builder

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nixery/nixery/internal/nix"
	"github.com/nixery/nixery/internal/source"
)

// evaluations shares evaluations of a package set between builds whose
// packages were not resolved before, by group commit: the first build to
// ask for a package set (a source identity on a system) evaluates at once;
// builds asking while that evaluation runs wait for it to end and then
// share the next one, which resolves all of their names together
// (nix.Runner.Resolve). A burst of new images thus costs two evaluations,
// not one each, and a lone build waits for nobody.
//
// The first build leads if it holds a build slot: it evaluates and builds
// in one Nix process of its own (nix.Runner.Build, as a build alone
// always did, with no process more) and says when its evaluation is over
// (nix.Request.Evaluated), which starts the batch collected meanwhile.
// Otherwise the first build's evaluation is a batch too, run while it
// waits for a slot.
//
// At most cap(slots) evaluations run at once, whatever the package sets.
// The builds that wait hold a place in the build queue (see ticket), so a
// batch has at most as many builds as the queue and the slots together.
// An evaluation runs detached from the builds that wait for it (one may
// give up while the others still want it), for at most timeout.
type evaluations struct {
	resolve func(ctx context.Context, set evalSet, names []string, rootDir string) ([]nix.Resolution, error)
	slots   chan struct{}
	timeout time.Duration
	logger  *slog.Logger

	mu   sync.Mutex
	sets map[evalSet]*batch // the batch each package set collects names for, if any
	busy map[evalSet]bool   // package sets being evaluated

	// Test hooks: joined runs when a build has joined a batch, started
	// when a batch's evaluation starts (with its names).
	joined  func()
	started func(names []string)
}

// evalSet is a package set on a system: what one evaluation covers.
type evalSet struct {
	Type, Args, Identity string // as in source.Resolved
	System               string
}

func setOf(src source.Resolved, system string) evalSet {
	return evalSet{Type: src.Type, Args: src.Args, Identity: src.Identity, System: system}
}

// batch is one evaluation and the builds that share it.
type batch struct {
	names []string
	done  chan struct{} // closed when res and err are set
	res   map[string]nix.Resolution
	err   error
	size  int // builds that asked

	// removeDir removes the garbage-collector roots of the derivations
	// the evaluation wrote (nix.TempRoots) when the last user (the
	// evaluation itself, then every build that asked) is done with them.
	removeDir func()
	users     int // under evaluations.mu
}

// resolved is a build's share of an evaluation: what each of its names
// resolved to (a name missing did not resolve) and how many builds shared
// the evaluation. release must be called once the build has realised its
// derivations, or given up.
type resolved struct {
	res     map[string]nix.Resolution
	builds  int
	release func()
}

// join waits for an evaluation of set that covers names, starting one if
// none runs. It fails if ctx ends or the evaluation as a whole failed.
//
// If canLead and nothing of set is being evaluated or collected, join
// returns at once with lead instead: the caller evaluates on its own and
// must call lead when its evaluation is over (at the latest when it gives
// up), which lets the next batch of set start.
func (e *evaluations) join(ctx context.Context, set evalSet, names []string, canLead bool) (shared *resolved, lead func(), err error) {
	e.mu.Lock()
	if e.sets == nil {
		e.sets, e.busy = map[evalSet]*batch{}, map[evalSet]bool{}
	}
	if canLead && !e.busy[set] && e.sets[set] == nil {
		e.busy[set] = true
		e.mu.Unlock()
		return nil, sync.OnceFunc(func() { e.led(set) }), nil
	}
	b := e.sets[set]
	if b == nil {
		b = &batch{done: make(chan struct{}), users: 1} // the evaluation's own use
		e.sets[set] = b
	}
	for _, n := range names {
		if !slices.Contains(b.names, n) {
			b.names = append(b.names, n)
		}
	}
	b.size++
	b.users++
	if !e.busy[set] {
		e.busy[set] = true
		go e.run(set)
	}
	e.mu.Unlock()
	if e.joined != nil {
		e.joined()
	}

	select {
	case <-b.done:
	case <-ctx.Done():
		e.release(b)
		return nil, nil, ctx.Err()
	}
	if b.err != nil {
		e.release(b)
		return nil, nil, b.err
	}
	return &resolved{res: b.res, builds: b.size, release: sync.OnceFunc(func() { e.release(b) })}, nil, nil
}

// led ends a leader's evaluation of set: the batch collected meanwhile,
// if any, is evaluated next.
func (e *evaluations) led(set evalSet) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.sets[set] == nil {
		delete(e.busy, set)
		return
	}
	go e.run(set)
}

// run evaluates the batches of set one after the other until no build
// asks for more.
func (e *evaluations) run(set evalSet) {
	for {
		e.mu.Lock()
		b := e.sets[set]
		delete(e.sets, set)
		if b == nil {
			delete(e.busy, set)
			e.mu.Unlock()
			return
		}
		e.mu.Unlock()

		e.slots <- struct{}{}
		if e.started != nil {
			e.started(b.names)
		}
		b.res, b.err = e.evaluate(set, b)
		<-e.slots
		close(b.done)
		e.release(b)
	}
}

func (e *evaluations) evaluate(set evalSet, b *batch) (map[string]nix.Resolution, error) {
	dir, remove, err := nix.TempRoots()
	if err != nil {
		return nil, err
	}
	b.removeDir = remove
	ctx, cancel := context.WithTimeout(context.Background(), e.timeout)
	defer cancel()
	list, err := e.resolve(ctx, set, b.names, dir)
	if err != nil {
		e.logger.Warn("shared evaluation failed; its builds evaluate alone", "names", len(b.names), "err", err)
		return nil, err
	}
	res := make(map[string]nix.Resolution, len(list))
	for _, r := range list {
		res[r.Name] = r
	}
	return res, nil
}

// release ends one use of b's derivation roots.
func (e *evaluations) release(b *batch) {
	e.mu.Lock()
	b.users--
	last := b.users == 0
	e.mu.Unlock()
	if last && b.removeDir != nil {
		b.removeDir()
	}
}

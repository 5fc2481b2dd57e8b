// Package builder turns a build request into a stored image: it asks Nix for
// the packages and their closure, groups the closure into layers, packs
// the layers and the customisation layer into storage, and writes the
// config and the manifests.
//
// Around that pipe sit the things that make it cheap for many users:
//
//   - a manifest cache and a layer cache in the storage backend (named
//     and encoded by package metadata; see cache.go), so warm pulls never
//     run Nix and a store-path set is packed once, even across restarts
//     and replicas;
//   - a lease per build on every blob it relies on, so that a garbage
//     collection running meanwhile cannot delete them (see gc.Collect);
//   - single flight: identical requests in flight share one build, which
//     runs detached from any one client, so a client that disconnects
//     does not cancel a build that others wait for (NIX_TIMEOUT and
//     BuildTimeout still end every build);
//   - a limit on builds running at once, with a bounded queue (limit.go),
//     an admission hook (per-client rate limits) before a new build
//     starts, and a short memory of failed builds, so that a client
//     repeating a broken name does not run Nix each time.
//
// A cold pull reads in file order: build.go starts the flight of a
// request (single flight, admission, draining); cold.go is the loop of
// look-up, claim and queue (buildOnce) with the reason for each look-up;
// plan.go says how the build gets its packages from Nix (known, shared or
// alone); steps.go runs the build's steps (realise, group, pack,
// publish); pack.go is the Packer that the pack step and bench/coldpack
// use.
//
// Both manifest formats (OCI and Docker schema 2) are written for every
// image, each under its own digest, so a pull by digest works whichever
// format the client first asked for.
package builder

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nixery/nixery/internal/archive"
	"github.com/nixery/nixery/internal/image"
	"github.com/nixery/nixery/internal/manifest"
	"github.com/nixery/nixery/internal/metadata"
	"github.com/nixery/nixery/internal/nix"
	"github.com/nixery/nixery/internal/source"
	"github.com/nixery/nixery/internal/storage"
)

// DefaultLayerBudget is the most layers an image gets, the customisation
// layer included (as in the original Nixery; well under the limits of
// common clients and runtimes).
const DefaultLayerBudget = 100

// DefaultBuildTimeout bounds a whole build (Nix, packing, upload) that no
// client may be waiting for any more.
const DefaultBuildTimeout = 30 * time.Minute

// Builder builds images. Source, Nix and Storage are required; the other
// fields have working zero values.
type Builder struct {
	Source      source.Source
	Nix         *nix.Runner
	Storage     storage.Backend
	LayerBudget int            // <= 1 means DefaultLayerBudget
	Format      archive.Format // layer compression: gzip (default) or zstd
	Compression int            // compression level; 0 = the format's default
	// Popularity (store path name → number of packages using it, as in
	// the original Nixery's popularity data) helps layering share more;
	// PopularityID names that data in cache keys.
	Popularity   map[string]int
	PopularityID string
	CacheTTL     time.Duration // reuse time of images from a moving source
	MaxBuilds    int           // builds at once; 0 = number of cores
	QueueSize    int           // builds waiting for a slot before ErrBusy
	// BuildTimeout bounds one whole build; 0 = DefaultBuildTimeout.
	BuildTimeout time.Duration
	// Admit, if set, is asked before a request starts a new build (not
	// for cached images, nor for joining a build in flight); an error
	// refuses the request (per-client rate limits).
	Admit func(ctx context.Context) error
	// Usable, if set, is asked before a new build of the package set src
	// starts (not for cached images, nor for joining a build in flight);
	// an error refuses the request at once, without running Nix (a
	// package set this Nix cannot evaluate, see package sourcehealth).
	Usable func(src source.Resolved) error
	// Suggest, if set, returns close names of the package set for a
	// name that is no package of it, best first, as an image name spells
	// them (search.Searcher.Suggest): they go into the error of unknown
	// packages (suggest.go). It must answer at once from what it holds,
	// never run Nix nor wait.
	Suggest func(name string) []string
	// FailureTTL is how long a failed build's error is answered again
	// without building; 0 = DefaultFailureTTL.
	FailureTTL time.Duration
	// ClaimTTL is how long a replica's claim on a build (fleet-wide
	// single flight, see metadata.TakeClaim) lives without renewal before
	// another replica takes the build over; 0 = DefaultClaimTTL.
	ClaimTTL time.Duration
	// Artifacts, if set, makes the artifacts of every image (its SBOMs,
	// provenance and signatures) once its details are stored, and those
	// of an image built before, at its first pull from this process.
	Artifacts Artifacts
	// HoldPack, if set, is called once in each build that packs, on the
	// packing goroutine whose bytes make half of the pack's total, right
	// after a progress event of them; the pack of that layer waits for
	// it. For tests that look at a pack in progress
	// (NIXERY_TEST_HOLD_PACK).
	HoldPack func()
	Logger   *slog.Logger

	once      sync.Once
	limit     *limiter
	cat       *metadata.Store
	hotCache  hotCache
	buildID   atomic.Int64
	stats     Stats
	flights   flights
	failures  failures
	history   history
	evals     evaluations
	phaseOnce sync.Once
	phaseHist *prometheus.HistogramVec

	// Test hooks: recheck replaces metadata.HotRecheck; beforeFinish runs
	// after a build's final event, before its flight ends; inSlot when a
	// build has its slot, before it starts.
	recheck      time.Duration
	beforeFinish func()
	inSlot       func(req *image.Request)

	drainMu  sync.Mutex
	draining bool
	running  sync.WaitGroup // builds started by this process, counted under drainMu
}

// Drain stops the builder from starting new builds (they get ErrDraining,
// which is retryable; joining a build in flight still works) and waits
// until the builds in flight have ended or ctx ends. Builds still running
// then lose their claims when the process exits, and another replica
// takes them over after ClaimTTL.
func (b *Builder) Drain(ctx context.Context) error {
	b.drainMu.Lock()
	b.draining = true
	b.drainMu.Unlock()
	done := make(chan struct{})
	go func() { b.running.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stats counts what the builder did since it started.
type Stats struct {
	CacheHits    atomic.Int64 // manifest requests answered from the cache
	CacheMisses  atomic.Int64 // manifest requests that needed a build
	NixBuilds    atomic.Int64 // Nix invocations (one per build)
	Evaluations  atomic.Int64 // evaluations of the package set: one per build alone, or one per shared batch
	Shared       atomic.Int64 // builds whose packages a shared evaluation resolved
	Resolved     atomic.Int64 // builds of packages resolved before: no evaluation
	Reevaluated  atomic.Int64 // builds whose known packages could not be realised, evaluated again
	BuildsOK     atomic.Int64
	BuildsError  atomic.Int64
	Rejected     atomic.Int64 // requests refused with ErrBusy
	LayersReused atomic.Int64 // layers found in the layer cache
	LayersPacked atomic.Int64 // layers packed and uploaded
}

// Stats returns the builder's counters.
func (b *Builder) Stats() *Stats { return &b.stats }

// Queue reports builds running and waiting.
func (b *Builder) Queue() (running, waiting int) {
	b.init()
	return b.limit.running(), b.limit.queued()
}

func (b *Builder) init() {
	b.once.Do(func() {
		slots := b.MaxBuilds
		if slots < 1 {
			slots = runtime.NumCPU()
		}
		b.limit = newLimiter(slots, b.QueueSize)
		b.cat = metadata.New(b.Storage, b.Logger)
		b.evals = evaluations{resolve: b.resolveShared, slots: make(chan struct{}, slots), timeout: b.buildTimeout(), logger: b.logger()}
	})
}

// Metadata returns the metadata store of the builder's storage, which names and
// encodes the cache entries; the search and the collector share it.
func (b *Builder) Metadata() *metadata.Store {
	b.init()
	return b.cat
}

func (b *Builder) logger() *slog.Logger {
	if b.Logger != nil {
		return b.Logger
	}
	return slog.Default()
}

func (b *Builder) budget() int {
	if b.LayerBudget <= 1 {
		return DefaultLayerBudget
	}
	return b.LayerBudget
}

// Artifacts makes the artifacts of a built image from its details, unless
// they exist; Ensure is called again until it succeeds.
type Artifacts interface {
	Ensure(ctx context.Context, d *metadata.Details) error
}

// Image is a built image: its manifests by media type.
type Image struct {
	Manifests map[string]Stored
}

// Stored is a manifest as stored.
type Stored struct {
	Data   []byte
	Digest digest.Digest
}

// Manifest returns the manifest in mediaType of the image req selects,
// from the cache or by building it. It implements registry.Builder.
func (b *Builder) Manifest(ctx context.Context, req *image.Request, mediaType string) ([]byte, digest.Digest, error) {
	src, key, err := b.resolve(ctx, req)
	if err != nil {
		return nil, "", err
	}
	h, err := b.cachedEntry(ctx, key)
	if err != nil {
		return nil, "", err
	}
	if data, ok := h.manifest(mediaType); ok {
		b.stats.CacheHits.Add(1)
		b.artifactsOf(ctx, key, h)
		return data, h.entry.Manifests[mediaType], nil
	}
	b.stats.CacheMisses.Add(1)

	// Identical requests share one build, detached from this client.
	f, err := b.start(ctx, key, req, src)
	if err != nil {
		return nil, "", err
	}
	select {
	case <-f.done:
		if f.err != nil {
			return nil, "", f.err
		}
		m, ok := f.img.Manifests[mediaType]
		if !ok {
			return nil, "", fmt.Errorf("no manifest of type %s", mediaType)
		}
		return m.Data, m.Digest, nil
	case <-ctx.Done():
		return nil, "", ctx.Err()
	}
}

// resolve says which package set req selects and the image's cache key.
func (b *Builder) resolve(ctx context.Context, req *image.Request) (source.Resolved, string, error) {
	b.init()
	src, err := b.Source.Resolve(ctx, req.Tag)
	if err != nil {
		return source.Resolved{}, "", err
	}
	return src, b.manifestKey(src.Identity, req.Packages, req.Arch.System, req.Options()), nil
}

// start joins the build of key in flight, or starts it detached from any
// client: it runs until it ends or BuildTimeout (and NIX_TIMEOUT within
// it) stops it, whoever is still waiting. A build that failed within
// FailureTTL is not started again: its error is the answer. Starting a
// new build needs Admit's consent.
func (b *Builder) start(ctx context.Context, key string, req *image.Request, src source.Resolved) (*flight, error) {
	if f := b.flights.join(key); f != nil {
		return f, nil
	}
	if err := b.failures.get(key, time.Now()); err != nil {
		return nil, err
	}
	if b.Usable != nil {
		if err := b.Usable(src); err != nil {
			return nil, err
		}
	}
	if b.Admit != nil {
		if err := b.Admit(ctx); err != nil {
			return nil, err
		}
	}
	b.drainMu.Lock()
	if b.draining {
		b.drainMu.Unlock()
		return nil, ErrDraining
	}
	f, started := b.flights.start(key, req)
	if !started {
		b.drainMu.Unlock()
		return f, nil // another request started it meanwhile
	}
	b.running.Add(1)
	b.drainMu.Unlock()
	go func() {
		defer b.running.Done()
		ctx, cancel := context.WithTimeout(context.Background(), b.buildTimeout())
		defer cancel()
		f.p.publish(Event{Kind: "queued", Message: req.Name + ":" + req.Tag})
		img, err := b.buildOnce(ctx, key, req, src, f.p)
		final := Event{Kind: "done", Message: "image ready"}
		if err != nil {
			err = b.suggest(err)
			if ownFailure(err) {
				b.failures.put(key, err, time.Now().Add(b.failureTTL()))
			}
			final = errorEvent(req, err)
		} else {
			final.Digest = img.Manifests[manifest.OCIManifest].Digest
		}
		// In the history before its final event, so that whoever saw the
		// build end finds it there (Builds lists it only there from then).
		b.history.add(f.p.record(f.req, img, err))
		f.p.publish(final)
		if b.beforeFinish != nil {
			b.beforeFinish()
		}
		b.flights.finish(key, f, img, err)
	}()
	return f, nil
}

func (b *Builder) buildTimeout() time.Duration {
	if b.BuildTimeout > 0 {
		return b.BuildTimeout
	}
	return DefaultBuildTimeout
}

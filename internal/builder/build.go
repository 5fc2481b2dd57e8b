// Package builder turns a build request into a stored image: it asks Nix for
// the packages and their closure, groups the closure into layers, packs
// the layers and the customisation layer into storage, and writes the
// config and the manifests.
//
// Around that pipe sit the things that make it cheap for many users:
//
//   - a manifest cache and a layer cache in the storage backend (named
//     and encoded by package catalog; see cache.go), so warm pulls never
//     run Nix and a store-path set is packed once, even across restarts
//     and replicas;
//   - a lease per build on every blob it relies on, so that a garbage
//     collection running meanwhile cannot delete them (see catalog.GC);
//   - single flight: identical requests in flight share one build, which
//     runs detached from any one client, so a client that disconnects
//     does not cancel a build that others wait for (NIX_TIMEOUT and
//     BuildTimeout still end every build);
//   - a limit on builds running at once, with a bounded queue (limit.go),
//     an admission hook (per-client rate limits) before a new build
//     starts, and a short memory of failed builds, so that a client
//     repeating a broken name does not run Nix each time.
//
// Both manifest formats (OCI and Docker schema 2) are written for every
// image, each under its own digest, so a pull by digest works whichever
// format the client first asked for.
package builder

import (
	"archive/tar"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/nixery/nixery/internal/archive"
	"github.com/nixery/nixery/internal/catalog"
	"github.com/nixery/nixery/internal/config"
	"github.com/nixery/nixery/internal/image"
	"github.com/nixery/nixery/internal/manifest"
	"github.com/nixery/nixery/internal/nix"
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
	Source      config.Source
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
	Usable func(src config.Resolved) error
	// FailureTTL is how long a failed build's error is answered again
	// without building; 0 = DefaultFailureTTL.
	FailureTTL time.Duration
	// ClaimTTL is how long a replica's claim on a build (fleet-wide
	// single flight, see catalog.TakeFlight) lives without renewal before
	// another replica takes the build over; 0 = DefaultClaimTTL.
	ClaimTTL time.Duration
	Logger   *slog.Logger

	once      sync.Once
	limit     *limiter
	cat       *catalog.Catalog
	hotCache  hotCache
	buildID   atomic.Int64
	stats     Stats
	flights   flights
	failures  failures
	evals     evaluations
	phaseOnce sync.Once
	phaseHist *prometheus.HistogramVec

	// Test hooks: recheck replaces catalog.HotRecheck; beforeFinish runs
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
		b.cat = catalog.New(b.Storage, b.Logger)
		b.evals = evaluations{resolve: b.resolveShared, slots: make(chan struct{}, slots), timeout: b.buildTimeout(), logger: b.logger()}
	})
}

// Catalog returns the catalog of the builder's storage, which names and
// encodes the cache entries; the web side and the collector share it.
func (b *Builder) Catalog() *catalog.Catalog {
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
	data, d, ok, err := b.cachedManifest(ctx, key, mediaType)
	if err != nil {
		return nil, "", err
	}
	if ok {
		b.stats.CacheHits.Add(1)
		return data, d, nil
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
func (b *Builder) resolve(ctx context.Context, req *image.Request) (config.Resolved, string, error) {
	b.init()
	src, err := b.Source.Resolve(ctx, req.Tag)
	if err != nil {
		return config.Resolved{}, "", err
	}
	return src, b.manifestKey(src.Identity, req.Packages, req.Arch.System, req.Options()), nil
}

// start joins the build of key in flight, or starts it detached from any
// client: it runs until it ends or BuildTimeout (and NIX_TIMEOUT within
// it) stops it, whoever is still waiting. A build that failed within
// FailureTTL is not started again: its error is the answer. Starting a
// new build needs Admit's consent.
func (b *Builder) start(ctx context.Context, key string, req *image.Request, src config.Resolved) (*flight, error) {
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
	f, started := b.flights.start(key)
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
		if err != nil {
			if ownFailure(err) {
				b.failures.put(key, err, time.Now().Add(b.failureTTL()))
			}
			f.p.publish(Event{Kind: "error", Message: err.Error()})
		} else {
			f.p.publish(Event{Kind: "done", Message: "image ready", Digest: img.Manifests[manifest.OCIManifest].Digest})
		}
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

// packAll packs (or finds in the layer cache) the layers of the store-path
// groups and the customisation layer, concurrently, and returns them in
// manifest order. The customisation layer is cached by its roots and what
// setup changes in it (a nonroot image's differs from the root image's).
//
// It runs in two steps, each at most PackLimit layers at once. First every
// layer is looked up in the layer cache and, when missing, its files are
// listed (a walk of the tree, no file read), which gives its size. Then
// the missing layers are packed biggest first: the archive's compressor
// pool compresses the chunks of every layer in flight, so the big layers
// keep the cores busy from the start while the small ones fill the gaps
// (and the waits on storage: fsync, upload), and no big layer is left to
// pack alone at the end. The listings wait in memory until packed: about
// a hundred bytes per file of the closure.
func (b *Builder) packAll(ctx context.Context, lease *catalog.Lease, groups [][]string, roots []string, setup archive.Setup, entries []archive.Entry, format archive.Format, level int) ([]manifest.Layer, error) {
	// One job per layer: the store-path groups, then the customisation layer.
	type job struct {
		kind      string   // of layer cache key
		paths     []string // store paths the layer holds or links to
		createdBy string
		list      func() (size int64, write func(*tar.Writer) error, err error)
		size      int64 // bytes of content, once listed
		write     func(*tar.Writer) error
	}
	jobs := make([]job, 0, len(groups)+1)
	for _, group := range groups {
		jobs = append(jobs, job{kind: "paths", paths: group, createdBy: describeGroup(group),
			list: func() (int64, func(*tar.Writer) error, error) {
				l, err := archive.ListStorePaths(group)
				if err != nil {
					return 0, nil, err
				}
				return l.Size(), l.Write, nil
			}})
	}
	custom := "customisation"
	if setup.NonRoot {
		custom += "/nonroot"
	}
	jobs = append(jobs, job{kind: custom, paths: roots, createdBy: "nixery customisation layer for " + describeGroup(roots),
		list: func() (int64, func(*tar.Writer) error, error) {
			var n int64
			for _, e := range entries {
				n += int64(len(e.Data))
			}
			return n, func(tw *tar.Writer) error { return archive.Entries(tw, entries) }, nil
		}})

	packed := make([]manifest.Layer, len(jobs))
	done := func(i int, l archive.Layer) {
		packed[i] = manifest.Layer{Blob: manifest.Blob{Digest: l.Digest, Size: l.Size}, DiffID: l.DiffID, CreatedBy: jobs[i].createdBy, MediaType: manifest.LayerMediaType(format.String())}
	}
	keys := make([]string, len(jobs))
	missing := make([]bool, len(jobs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(PackLimit())
	for i := range jobs {
		keys[i] = layerKey(jobs[i].kind, jobs[i].paths, format, level)
		g.Go(func() error {
			l, ok, err := b.cachedLayer(gctx, lease, keys[i])
			if err != nil {
				return fmt.Errorf("layer of %s: %w", jobs[i].createdBy, err)
			}
			if ok {
				done(i, l)
				return nil
			}
			if jobs[i].size, jobs[i].write, err = jobs[i].list(); err != nil {
				return fmt.Errorf("layer of %s: %w", jobs[i].createdBy, err)
			}
			missing[i] = true
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}

	var order []int
	for i := range jobs {
		if missing[i] {
			order = append(order, i)
		}
	}
	// Biggest first; equal sizes in manifest order, so the order (not the
	// bytes, which never depend on it) is the same in every run.
	slices.SortStableFunc(order, func(a, c int) int { return cmp.Compare(jobs[c].size, jobs[a].size) })
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(PackLimit())
	for _, i := range order {
		g.Go(func() error {
			l, err := b.layer(gctx, lease, keys[i], format, level, jobs[i].write)
			if err != nil {
				return fmt.Errorf("layer of %s: %w", jobs[i].createdBy, err)
			}
			done(i, l)
			jobs[i].write = nil // the listing is no longer needed
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return packed, nil
}

// PackLimit is the most layers one build packs (or looks up) at once.
// Twice the cores: the chunks of every layer in flight share the process's
// compressor pool (which bounds the CPU and the chunk memory whatever the
// number of layers), and the extra layers keep the cores busy while others
// wait on storage (fsync and rename, an upload's round trip) or between a
// small layer's stages. Each layer in flight holds an open file or, for
// S3 and GCS, up to one upload part (8 MiB) in memory.
func PackLimit() int { return 2 * runtime.NumCPU() }

// cachedLayer returns the layer cached for key, its blob held in lease,
// or ok false if there is none (or its blob was collected before the lease
// named it: it must be packed again).
func (b *Builder) cachedLayer(ctx context.Context, lease *catalog.Lease, key string) (l archive.Layer, ok bool, err error) {
	l, ok, err = b.Catalog().Layer(ctx, key)
	if err != nil || !ok {
		return archive.Layer{}, false, err
	}
	if err := lease.Hold(ctx, true, l.Digest); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return archive.Layer{}, false, nil
		}
		return archive.Layer{}, false, err
	}
	b.stats.LayersReused.Add(1)
	return l, true, nil
}

// layer packs a layer with write into storage (tar, compress, hash and
// upload in one pass), holds its blob in lease and caches it under key.
func (b *Builder) layer(ctx context.Context, lease *catalog.Lease, key string, format archive.Format, level int, write func(*tar.Writer) error) (archive.Layer, error) {
	w, err := b.Storage.Create(ctx)
	if err != nil {
		return archive.Layer{}, err
	}
	l, err := archive.PackWith(w, archive.Options{Format: format, Level: level}, write)
	if err != nil {
		w.Cancel()
		return archive.Layer{}, err
	}
	if err := w.Commit(l.Digest); err != nil {
		return archive.Layer{}, err
	}
	if err := lease.Hold(ctx, true, l.Digest); err != nil {
		return archive.Layer{}, err // vanished at once: the whole build runs again
	}
	b.stats.LayersPacked.Add(1)
	if err := b.Catalog().PutLayer(ctx, key, l); err != nil {
		b.logger().Warn("layer cache: entry not stored", "err", err)
	}
	return l, nil
}

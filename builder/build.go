// Package build turns a build request into a stored image: it asks Nix for
// the packages and their closure, groups the closure into layers, packs
// the layers and the customisation layer into storage, and writes the
// config and the manifests.
//
// Around that pipe sit the things that make it cheap for many users:
//
//   - a manifest cache and a layer cache in the storage backend (see
//     cache.go), so warm pulls never run Nix and a store-path set is
//     packed once, even across restarts and replicas;
//   - single flight: identical requests in flight share one build, which
//     runs detached from any one client, so a client that disconnects
//     does not cancel a build that others wait for (NIX_TIMEOUT and
//     BuildTimeout still end every build);
//   - a limit on builds running at once, with a bounded queue (limit.go).
//
// Both manifest formats (OCI and Docker schema 2) are written for every
// image, each under its own digest, so a pull by digest works whichever
// format the client first asked for.
package builder

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/singleflight"

	"github.com/nixery/nixery/archive"
	"github.com/nixery/nixery/config"
	"github.com/nixery/nixery/image"
	"github.com/nixery/nixery/layers"
	"github.com/nixery/nixery/manifest"
	"github.com/nixery/nixery/nix"
	"github.com/nixery/nixery/storage"
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
	Logger       *slog.Logger

	once     sync.Once
	limit    *limiter
	flight   singleflight.Group
	hot      hotCache
	buildID  atomic.Int64
	stats    Stats
	progress progressTable
	recent   recentList
	phases   phaseStats
}

// Stats counts what the builder did since it started.
type Stats struct {
	CacheHits    atomic.Int64 // manifest requests answered from the cache
	CacheMisses  atomic.Int64 // manifest requests that needed a build
	NixBuilds    atomic.Int64 // Nix invocations (one per build)
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
	})
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
	_, ch := b.start(key, req, src)
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, "", r.Err
		}
		m, ok := r.Val.(*Image).Manifests[mediaType]
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
	return src, b.manifestKey(src.Identity, req.Packages, req.Arch.System), nil
}

// start joins the build of key in flight, or starts it detached from any
// client: it runs until it ends or BuildTimeout (and NIX_TIMEOUT within
// it) stops it, whoever is still waiting.
func (b *Builder) start(key string, req *image.Request, src config.Resolved) (*progress, <-chan singleflight.Result) {
	p := b.progress.get(key)
	ch := b.flight.DoChan(key, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.Background(), b.buildTimeout())
		defer cancel()
		defer b.progress.finish(key, p)
		p.publish(Event{Kind: "queued", Message: req.Name + ":" + req.Tag})
		img, err := b.buildLimited(ctx, key, req, src, p)
		if err != nil {
			p.publish(Event{Kind: "error", Message: err.Error()})
			return nil, err
		}
		p.publish(Event{Kind: "done", Message: "image ready", Digest: img.Manifests[manifest.OCIManifest].Digest})
		return img, nil
	})
	return p, ch
}

func (b *Builder) buildTimeout() time.Duration {
	if b.BuildTimeout > 0 {
		return b.BuildTimeout
	}
	return DefaultBuildTimeout
}

// buildLimited waits for a build slot, then builds and caches the image.
func (b *Builder) buildLimited(ctx context.Context, key string, req *image.Request, src config.Resolved, p *progress) (*Image, error) {
	if err := b.limit.acquire(ctx); err != nil {
		if errors.Is(err, ErrBusy) {
			b.stats.Rejected.Add(1)
		}
		return nil, err
	}
	defer b.limit.release()
	img, err := b.build(ctx, key, req, src, p)
	if err != nil {
		b.stats.BuildsError.Add(1)
		return nil, err
	}
	b.stats.BuildsOK.Add(1)
	if err := b.storeManifestEntry(ctx, key, img, src.Immutable); err != nil {
		// The image is stored; only the shortcut to it is missing.
		b.logger().Warn("manifest cache: entry not stored", "image", req.Name, "err", err)
	}
	return img, nil
}

// build runs the whole pipe for one image, without looking at the
// manifest cache (the layer cache is used), publishing its progress to p.
func (b *Builder) build(ctx context.Context, key string, req *image.Request, src config.Resolved, p *progress) (*Image, error) {
	id := b.buildID.Add(1)
	log := b.logger().With("image", req.Name, "tag", req.Tag, "build", id)
	start := time.Now()
	// phase records and logs a phase that took d, and announces the next.
	phase := func(name string, d time.Duration, next string, args ...any) {
		b.observePhase(name, d)
		log.Info("build phase", append([]any{"phase", name, "seconds", d.Seconds()}, args...)...)
		if next != "" {
			p.publish(Event{Kind: "phase", Phase: next})
		}
	}

	b.stats.NixBuilds.Add(1)
	// The closure must survive a Nix garbage collection until it is packed.
	roots, err := os.MkdirTemp("", "nixery-roots-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(roots)
	nixPhase := "realise"
	res, err := b.Nix.Build(ctx, nix.Request{
		SrcType: src.Type, SrcArgs: src.Args, Packages: req.Packages, System: req.Arch.System, RootDir: roots,
		Log: func(line string) { p.publish(Event{Kind: "log", Phase: nixPhase, Message: line}) },
		Phase: func(name string) {
			nixPhase = name
			msg := "evaluating and building " + strings.Join(req.Packages, ", ")
			if name == "graph" {
				msg = "querying the closure's sizes and references"
			}
			p.publish(Event{Kind: "phase", Phase: name, Message: msg})
		},
	})
	if err != nil {
		log.Info("build failed", "phase", "nix", "err", err)
		return nil, err
	}
	// Nix announced its own phases (the Phase callback) and timed them.
	phase("realise", res.Realise, "", "roots", len(res.Roots))
	phase("graph", res.Graph, "layers", "paths", len(res.Closure))
	t := time.Now()

	paths := make([]layers.Path, len(res.Closure))
	for i, p := range res.Closure {
		paths[i] = layers.Path{Name: p.Path, Size: p.NarSize, References: p.References}
	}
	// One slot is kept for the customisation layer.
	groups := layers.GroupWith(paths, b.budget()-1, layers.Options{Popularity: b.Popularity})
	phase("layers", time.Since(t), "pack", "groups", len(groups))
	t = time.Now()

	// The customisation layer only reads the roots' top directories;
	// computing it is cheap even when its layer is cached.
	entries, info, err := archive.Customisation(res.Roots)
	if err != nil {
		return nil, fmt.Errorf("customisation layer: %w", err)
	}
	// zstd layers are for clients that read OCI manifests; a client that
	// only reads Docker's schema 2 gets gzip layers of the same tars.
	packed, err := b.packAll(ctx, groups, res.Roots, entries, b.Format, b.Compression)
	if err != nil {
		log.Info("build failed", "phase", "pack", "err", err)
		return nil, err
	}
	dockerLayers := packed
	if b.Format != archive.Gzip {
		if dockerLayers, err = b.packAll(ctx, groups, res.Roots, entries, archive.Gzip, 0); err != nil {
			log.Info("build failed", "phase", "pack", "err", err)
			return nil, err
		}
	}
	phase("pack", time.Since(t), "manifest", "layers", len(packed))
	t = time.Now()

	img := manifest.Image{Arch: req.Arch.OCI, Env: []string{"PATH=" + info.Path}, Layers: packed}
	if info.CertFile != "" {
		img.Env = append(img.Env, "SSL_CERT_FILE="+info.CertFile, "NIX_SSL_CERT_FILE="+info.CertFile)
	}
	if info.Shell != "" {
		img.Cmd = []string{"bash"}
	}
	out, err := b.store(ctx, img, dockerLayers)
	if err != nil {
		return nil, err
	}
	phase("manifest", time.Since(t), "")
	b.remember(ctx, key, req, src, res, groups, packed, out)
	log.Info("image built", "seconds", time.Since(start).Seconds(), "digest", out.Manifests[manifest.OCIManifest].Digest)
	return out, nil
}

// packAll packs (or finds in the layer cache) the layers of the store-path
// groups and the customisation layer, in manifest order, concurrently.
func (b *Builder) packAll(ctx context.Context, groups [][]string, roots []string, entries []archive.Entry, format archive.Format, level int) ([]manifest.Layer, error) {
	// One job per layer: the store-path groups, then the customisation layer.
	type job struct {
		kind      string   // of layer cache key
		paths     []string // store paths the layer holds or links to
		createdBy string
		write     func(*tar.Writer) error
	}
	jobs := make([]job, 0, len(groups)+1)
	for _, group := range groups {
		jobs = append(jobs, job{"paths", group, describeGroup(group),
			func(tw *tar.Writer) error { return archive.StorePaths(tw, group) }})
	}
	jobs = append(jobs, job{"customisation", roots, "nixery customisation layer for " + describeGroup(roots),
		func(tw *tar.Writer) error { return archive.Entries(tw, entries) }})

	packed := make([]manifest.Layer, len(jobs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.NumCPU())
	for i, j := range jobs {
		g.Go(func() error {
			l, err := b.layer(gctx, b.layerKey(j.kind, j.paths, format, level), format, level, j.write)
			if err != nil {
				return fmt.Errorf("layer of %s: %w", j.createdBy, err)
			}
			packed[i] = manifest.Layer{Blob: manifest.Blob{Digest: l.Digest, Size: l.Size}, DiffID: l.DiffID, CreatedBy: j.createdBy, MediaType: manifest.LayerMediaType(format.String())}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return packed, nil
}

// layer returns the layer cached for key, or packs it with write into
// storage (tar, compress, hash and upload in one pass) and caches it.
func (b *Builder) layer(ctx context.Context, key string, format archive.Format, level int, write func(*tar.Writer) error) (archive.Layer, error) {
	if l, ok := b.cachedLayer(ctx, key); ok {
		b.stats.LayersReused.Add(1)
		return l, nil
	}
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
	b.stats.LayersPacked.Add(1)
	if err := b.storeLayerEntry(ctx, key, l); err != nil {
		b.logger().Warn("layer cache: entry not stored", "err", err)
	}
	return l, nil
}

// store writes the config and both manifests; the Docker manifest lists
// dockerLayers (the same tars, gzip-compressed).
func (b *Builder) store(ctx context.Context, img manifest.Image, dockerLayers []manifest.Layer) (*Image, error) {
	cfg, err := manifest.Config(img)
	if err != nil {
		return nil, err
	}
	cfgDigest, err := storage.Put(ctx, b.Storage, cfg)
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	out := &Image{Manifests: map[string]Stored{}}
	for _, mt := range manifest.MediaTypes {
		layers := img.Layers
		if mt == manifest.DockerManifest {
			layers = dockerLayers
		}
		data, err := manifest.Manifest(mt, manifest.Blob{Digest: cfgDigest, Size: int64(len(cfg))}, layers)
		if err != nil {
			return nil, err
		}
		d, err := storage.Put(ctx, b.Storage, data)
		if err != nil {
			return nil, fmt.Errorf("manifest: %w", err)
		}
		out.Manifests[mt] = Stored{Data: data, Digest: d}
	}
	return out, nil
}

package builder

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/nixery/nixery/internal/archive"
	"github.com/nixery/nixery/internal/bounded"
	"github.com/nixery/nixery/internal/manifest"
	"github.com/nixery/nixery/internal/metadata"
	"github.com/nixery/nixery/internal/nix"
	"github.com/nixery/nixery/internal/storage"
)

// Both caches live in the storage backend (package metadata names and
// encodes them), so they survive restarts and are shared by replicas:
// the manifest cache says which manifests an image request produced, the
// layer cache which blob a set of store paths was packed into.

// manifestKey identifies one image: the package set (its resolved
// identity), the packages, the architecture, the request's options
// (image.Request.Options: nonroot) and the layering settings. Both
// manifest media types are stored in one entry.
func (b *Builder) manifestKey(identity string, packages []string, system string, options map[string]string) string {
	k := map[string]any{
		"v":        metadata.Version,
		"source":   identity,
		"packages": packages,
		"system":   system,
		"layering": b.settings(),
	}
	if len(options) > 0 {
		// Only then: a default image keeps the key it always had.
		k["options"] = options
	}
	return metadata.Key(k)
}

// settings are the builder options that change the bytes of an image.
func (b *Builder) settings() map[string]any {
	return map[string]any{"budget": b.budget(), "format": b.Format.String(), "level": b.Compression, "popularity": b.PopularityID}
}

// layerKey identifies the layer of an exact set of store paths (sorted).
// Store paths are immutable, so such an entry never expires.
func layerKey(kind string, paths []string, format archive.Format, level int) string {
	return metadata.Key(map[string]any{"v": metadata.Version, "kind": kind, "paths": paths, "format": format.String(), "level": level})
}

// hotEntry is a manifest cache entry held in memory with the manifests
// it names, so that a warm pull reads no storage at all.
type hotEntry struct {
	entry     metadata.Entry
	manifests map[string][]byte
	touched   atomic.Int64 // unix seconds this process last recorded a use
	checked   atomic.Int64 // unix nanoseconds the entry was last seen in storage
	// artifacts is the unix nanoseconds from which the image's artifacts
	// may be ensured (again); -1 once they were.
	artifacts atomic.Int64
}

// manifest is the entry's manifest in mediaType; h may be nil (no entry).
func (h *hotEntry) manifest(mediaType string) ([]byte, bool) {
	if h == nil {
		return nil, false
	}
	data, ok := h.manifests[mediaType]
	return data, ok
}

// touchInterval is how often a pull records in storage that an image is
// still used (nixery gc keeps images used within its age).
const touchInterval = metadata.UseInterval

// touch records a use of the image of key if this process has not done
// so within touchInterval. Failures only delay the record.
func (b *Builder) touch(ctx context.Context, key string, h *hotEntry) {
	now := time.Now()
	last := h.touched.Load()
	if now.Unix()-last < int64(touchInterval/time.Second) || !h.touched.CompareAndSwap(last, now.Unix()) {
		return
	}
	if err := b.Metadata().RecordUse(ctx, key); err != nil {
		b.logger().Warn("manifest cache: use not recorded", "err", err)
	}
}

// hotCacheSize bounds the in-memory manifest cache (entries, each a few KB).
const hotCacheSize = 4096

// hotCache is a small in-memory layer over the manifest cache in storage.
// It never outlives the storage entry's own freshness rules, and an entry
// is re-checked in storage every metadata.HotRecheck, so one that the
// collector deleted is dropped, never served on or written back. Beyond
// hotCacheSize the least recently used entry goes (refilling it costs one
// storage read). The zero value works.
type hotCache struct {
	once    sync.Once
	entries *bounded.Map[string, *hotEntry]
}

func (c *hotCache) m() *bounded.Map[string, *hotEntry] {
	c.once.Do(func() { c.entries = bounded.New[string, *hotEntry](hotCacheSize) })
	return c.entries
}

func (c *hotCache) get(key string) *hotEntry {
	e, _ := c.m().Get(key)
	return e
}

func (c *hotCache) put(key string, e *hotEntry) { c.m().Put(key, e) }

func (c *hotCache) drop(key string, e *hotEntry) {
	c.m().DeleteIf(key, func(x *hotEntry) bool { return x == e })
}

// hot returns the in-memory entry of key if it is fresh and, within
// metadata.HotRecheck, still in storage.
func (b *Builder) hot(ctx context.Context, key string) (*hotEntry, error) {
	h := b.hotCache.get(key)
	if h == nil || !h.entry.Fresh(b.CacheTTL, time.Now()) {
		return nil, nil
	}
	if time.Since(time.Unix(0, h.checked.Load())) < b.hotRecheck() {
		return h, nil
	}
	ok, err := b.Metadata().EntryExists(ctx, key)
	if err != nil {
		return nil, err
	}
	if !ok {
		b.hotCache.drop(key, h) // collected: build it again, never write it back
		return nil, nil
	}
	h.checked.Store(time.Now().UnixNano())
	return h, nil
}

func (b *Builder) hotRecheck() time.Duration {
	if b.recheck > 0 {
		return b.recheck
	}
	return metadata.HotRecheck
}

// cachedManifest returns the manifest of mediaType from a fresh cache
// entry, or ok=false.
func (b *Builder) cachedManifest(ctx context.Context, key, mediaType string) (data []byte, d digest.Digest, ok bool, err error) {
	h, err := b.cachedEntry(ctx, key)
	if err != nil {
		return nil, "", false, err
	}
	data, ok = h.manifest(mediaType)
	if !ok {
		return nil, "", false, nil
	}
	return data, h.entry.Manifests[mediaType], true, nil
}

// cachedEntry returns the fresh cache entry of key with its manifests,
// from memory or from storage, or nil. Storage errors other than a
// missing entry are returned: a storage outage must not turn into a
// rebuild storm.
//
// An entry read from storage is trusted only if every blob its manifests
// reference exists: an image that lost a blob (however) is rebuilt, which
// packs the missing layers again, rather than served broken.
func (b *Builder) cachedEntry(ctx context.Context, key string) (*hotEntry, error) {
	h, err := b.hot(ctx, key)
	if err != nil {
		return nil, err
	}
	if h != nil {
		b.touch(ctx, key, h)
		return h, nil
	}
	e, err := b.Metadata().Entry(ctx, key)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if !e.Fresh(b.CacheTTL, time.Now()) {
		return nil, nil
	}
	h = &hotEntry{entry: e, manifests: map[string][]byte{}}
	h.checked.Store(time.Now().UnixNano())
	var blobs []digest.Digest
	for mt, md := range e.Manifests {
		m, err := b.Metadata().ReadManifest(ctx, md)
		if errors.Is(err, storage.ErrNotFound) {
			return nil, nil // collected meanwhile: rebuild
		}
		if err != nil {
			return nil, err
		}
		if digest.FromBytes(m) != md {
			return nil, fmt.Errorf("manifest %s in storage does not match its digest", md)
		}
		h.manifests[mt] = m
		refs, err := manifest.References(m)
		if err != nil {
			return nil, fmt.Errorf("manifest %s: %w", md, err)
		}
		blobs = append(blobs, refs...)
	}
	if missing, err := b.Metadata().Missing(ctx, blobs); len(missing) > 0 {
		b.logger().Warn("manifest cache: image lost blobs, rebuilding it", "missing", len(missing), "first", missing[0])
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	b.hotCache.put(key, h)
	b.touch(ctx, key, h)
	return h, nil
}

func (b *Builder) storeManifestEntry(ctx context.Context, key string, img *Image, immutable bool) error {
	e := metadata.Entry{Built: time.Now().UTC(), Immutable: immutable, Manifests: map[string]digest.Digest{}}
	for mt, m := range img.Manifests {
		e.Manifests[mt] = m.Digest
	}
	return b.Metadata().PutEntry(ctx, key, e)
}

// describeGroup names a layer's store paths for its history entry.
func describeGroup(group []string) string {
	names := make([]string, 0, 6)
	for _, p := range group {
		if len(names) == 5 {
			names = append(names, fmt.Sprintf("and %d more", len(group)-5))
			break
		}
		names = append(names, strings.TrimPrefix(p, "/nix/store/"))
	}
	return strings.Join(names, ", ")
}

// recordResolutions keeps what each package of an evaluation resolved to,
// a few writes at once (the build waits for them). Failures only cost an
// evaluation next time.
func (b *Builder) recordResolutions(ctx context.Context, identity, system string, packages []nix.Resolution) {
	now := time.Now().UTC()
	var g errgroup.Group
	g.SetLimit(8)
	for _, p := range packages {
		g.Go(func() error {
			r := metadata.Package{Outputs: p.Outputs, Programs: p.Programs, At: now, Meta: &p.Meta}
			if err := b.Metadata().PutPackage(ctx, identity, system, p.Name, r); err != nil {
				b.logger().Warn("resolved package not recorded", "package", p.Name, "err", err)
			}
			return nil
		})
	}
	g.Wait()
}

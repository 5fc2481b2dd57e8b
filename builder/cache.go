package builder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/nixery/nixery/archive"
	"github.com/nixery/nixery/storage"
)

// Both caches live in the storage backend as small named objects, so they
// survive restarts and are shared by replicas that share storage:
//
//	manifests/<key>  which manifests an image request produced, and when
//	layers/<key>     which blob a set of store paths was packed into
//
// Keys are sha256 digests of an unambiguous encoding (JSON) of everything
// that changes the result and nothing else.

// cacheVersion changes whenever the bytes Nixery produces for the same
// inputs change (layer format, customisation layer, config), so that old
// entries are not reused for new code.
const cacheVersion = "3"

// manifestKey identifies one image: the package set (its resolved
// identity), the packages, the architecture and the layering settings.
// Both manifest media types are stored in one entry.
func (b *Builder) manifestKey(identity string, packages []string, system string) string {
	return hashKey(map[string]any{
		"v":        cacheVersion,
		"source":   identity,
		"packages": packages,
		"system":   system,
		"layering": b.settings(),
	})
}

// settings are the builder options that change the bytes of an image.
func (b *Builder) settings() map[string]any {
	return map[string]any{"budget": b.budget(), "format": b.Format.String(), "level": b.Compression, "popularity": b.PopularityID}
}

// layerKey identifies the layer of an exact set of store paths (sorted).
// Store paths are immutable, so such an entry never expires.
func (b *Builder) layerKey(kind string, paths []string, format archive.Format, level int) string {
	return hashKey(map[string]any{"v": cacheVersion, "kind": kind, "paths": paths, "format": format.String(), "level": level})
}

func hashKey(v any) string {
	data, err := json.Marshal(v)
	if err != nil {
		panic(err) // only maps of strings, numbers and string slices
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// manifestEntry is a manifest cache entry.
type manifestEntry struct {
	Built     time.Time                `json:"built"`
	Used      time.Time                `json:"used"` // last pull, to within touchInterval (for gc)
	Immutable bool                     `json:"immutable"`
	Manifests map[string]digest.Digest `json:"manifests"` // by media type
}

// fresh reports whether the entry may still be used.
func (e *manifestEntry) fresh(ttl time.Duration, now time.Time) bool {
	return e.Immutable || now.Sub(e.Built) < ttl
}

// hotEntry is a manifest cache entry held in memory with the manifests
// it names, so that a warm pull reads no storage at all.
type hotEntry struct {
	entry     manifestEntry
	manifests map[string][]byte
	touched   atomic.Int64 // unix seconds the storage entry last recorded a use
}

// touchInterval is how often a pull records in storage that an image is
// still used (nixery gc keeps images used within its age): at most one
// small write per image and interval, however many pulls.
const touchInterval = time.Hour

// touch records a use of the entry for key if the last record is older
// than touchInterval. Failures only delay the record.
func (b *Builder) touch(ctx context.Context, key string, h *hotEntry) {
	now := time.Now()
	last := h.touched.Load()
	if now.Unix()-last < int64(touchInterval/time.Second) || !h.touched.CompareAndSwap(last, now.Unix()) {
		return
	}
	e := h.entry
	e.Used = now.UTC()
	if err := b.putManifestEntry(ctx, key, e); err != nil {
		b.logger().Warn("manifest cache: use not recorded", "err", err)
	}
}

// hotCacheSize bounds the in-memory manifest cache (entries, each a few KB).
const hotCacheSize = 4096

// hotCache is a small in-memory layer over the manifest cache in storage.
// It never outlives the storage entry's own freshness rules.
type hotCache struct {
	mu      sync.Mutex
	entries map[string]*hotEntry
}

func (c *hotCache) get(key string) *hotEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.entries[key]
}

func (c *hotCache) put(key string, e *hotEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil || len(c.entries) >= hotCacheSize {
		// Dropping everything is crude but bounded, and refilling it
		// costs one storage read per image.
		c.entries = map[string]*hotEntry{}
	}
	c.entries[key] = e
}

// cachedManifest returns the manifest of mediaType from a fresh cache
// entry, or ok=false. Storage errors other than a missing entry are
// returned: a storage outage must not turn into a rebuild storm.
func (b *Builder) cachedManifest(ctx context.Context, key, mediaType string) (data []byte, d digest.Digest, ok bool, err error) {
	if h := b.hot.get(key); h != nil && h.entry.fresh(b.CacheTTL, time.Now()) {
		if data, ok := h.manifests[mediaType]; ok {
			b.touch(ctx, key, h)
			return data, h.entry.Manifests[mediaType], true, nil
		}
	}
	raw, err := b.Storage.GetObject(ctx, "manifests/"+key)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, "", false, nil
	}
	if err != nil {
		return nil, "", false, err
	}
	var e manifestEntry
	if json.Unmarshal(raw, &e) != nil || !e.fresh(b.CacheTTL, time.Now()) {
		return nil, "", false, nil
	}
	d, found := e.Manifests[mediaType]
	if !found {
		return nil, "", false, nil
	}
	h := &hotEntry{entry: e, manifests: map[string][]byte{}}
	h.touched.Store(e.Used.Unix())
	for mt, md := range e.Manifests {
		m, err := storage.Get(ctx, b.Storage, md)
		if errors.Is(err, storage.ErrNotFound) {
			return nil, "", false, nil // collected meanwhile: rebuild
		}
		if err != nil {
			return nil, "", false, err
		}
		if digest.FromBytes(m) != md {
			return nil, "", false, fmt.Errorf("manifest %s in storage does not match its digest", md)
		}
		h.manifests[mt] = m
	}
	b.hot.put(key, h)
	b.touch(ctx, key, h)
	return h.manifests[mediaType], d, true, nil
}

func (b *Builder) storeManifestEntry(ctx context.Context, key string, img *Image, immutable bool) error {
	now := time.Now().UTC()
	e := manifestEntry{Built: now, Used: now, Immutable: immutable, Manifests: map[string]digest.Digest{}}
	for mt, m := range img.Manifests {
		e.Manifests[mt] = m.Digest
	}
	return b.putManifestEntry(ctx, key, e)
}

func (b *Builder) putManifestEntry(ctx context.Context, key string, e manifestEntry) error {
	data, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return b.Storage.PutObject(ctx, "manifests/"+key, data)
}

// cachedLayer returns the layer packed earlier for key if its blob still
// exists with the recorded size.
func (b *Builder) cachedLayer(ctx context.Context, key string) (archive.Layer, bool) {
	raw, err := b.Storage.GetObject(ctx, "layers/"+key)
	if err != nil {
		return archive.Layer{}, false
	}
	var l archive.Layer
	if json.Unmarshal(raw, &l) != nil || l.Digest.Validate() != nil {
		return archive.Layer{}, false
	}
	if size, err := b.Storage.Stat(ctx, l.Digest); err != nil || size != l.Size {
		return archive.Layer{}, false
	}
	return l, true
}

func (b *Builder) storeLayerEntry(ctx context.Context, key string, l archive.Layer) error {
	data, err := json.Marshal(l)
	if err != nil {
		return err
	}
	if err := b.Storage.PutObject(ctx, "layers/"+key, data); err != nil {
		return fmt.Errorf("layer cache: %w", err)
	}
	return nil
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

// Package metadata owns everything Nixery stores besides the blobs
// themselves: the name and the encoding of every named object in the
// storage backend. The garbage collection over them (package gc) asks
// the metadata store for them by kind and key (objects.go).
//
//	manifests/<key>       manifest cache entry: which manifests an image request produced
//	uses/images/<key>     use record of an image (a pull by name), renewed hourly
//	uses/digests/<hex>    use record of a manifest pulled by digest, renewed hourly
//	layers/<key>          layer cache entry: which blob a set of store paths was packed into
//	details/<key>         image details for the web pages
//	recent/images         the keys of the images built last, newest first
//	search/<key>          a package set's stored package list (package search)
//	resolved/<key>        what a package name resolved to in a package set (no evaluation next time)
//	leases/<id>           the blobs a build in progress relies on (see Lease)
//	referrers/<hex>/<signer>  the artifacts (SBOMs, provenance, signatures) of the manifest sha256:<hex>
//	gc/clock, gc/lease    the storage's clock probe and the scheduled collector's lease
//
// No other package spells an object name: builder, gc, search, web,
// registry and cmd/nixery ask the metadata store by meaning. Keys are sha256
// digests of an unambiguous (JSON) encoding of everything that changes
// the result and nothing else.
//
// Use records are objects of their own, never a rewrite of the entry they
// belong to, so recording a use can never bring back an entry that the
// collector deleted. All ages are read from the storage's own modification
// times, one clock for every replica (see StorageClock and package gc).
package metadata

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/nixery/nixery/internal/archive"
	"github.com/nixery/nixery/internal/bounded"
	"github.com/nixery/nixery/internal/storage"
)

// Version changes whenever the bytes Nixery produces for the same inputs
// change (layer format, customisation layer, config), so that old entries
// are not reused for new code.
const Version = "3"

// Object name prefixes; the layout above.
const (
	manifestsPrefix  = "manifests/"
	imageUsesPrefix  = "uses/images/"
	digestUsesPrefix = "uses/digests/"
	layersPrefix     = "layers/"
	detailsPrefix    = "details/"
	searchPrefix     = "search/"
	leasesPrefix     = "leases/"
	recentObject     = "recent/images"
	clockObject      = "gc/clock"
	gcLeaseObject    = "gc/lease"
	probeObject      = "readyz-probe"
)

// Store reads and writes Nixery's named objects in Backend, which is
// required; the zero values of the other fields work.
type Store struct {
	Backend storage.Backend
	Logger  *slog.Logger
	// Now is the local clock, used only for freshness (NIXERY_CACHE_TTL)
	// and for throttling; never for garbage collection, which reads the
	// storage's clock. Tests inject it; nil means time.Now.
	Now func() time.Time

	recent  recentCache
	pullsMu sync.Mutex
	// pulls are the digests whose pull was recorded within UseInterval.
	pulls *bounded.Map[digest.Digest, struct{}]
}

// New returns a metadata store over store.
func New(store storage.Backend, logger *slog.Logger) *Store {
	return &Store{Backend: store, Logger: logger}
}

func (c *Store) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Store) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.Default()
}

// Key hashes the JSON encoding of v (maps, strings, numbers and slices of
// them) into a cache key. Callers put everything that changes the result
// into v, and Version.
func Key(v any) string {
	data, err := json.Marshal(v)
	if err != nil {
		panic(err) // only plain values
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// validKey reports whether key is a cache key as Key makes them (callers
// never pass names from clients, but the layout depends on it).
func validKey(key string) bool {
	if len(key) != 64 {
		return false
	}
	_, err := hex.DecodeString(key)
	return err == nil
}

func keyed(prefix, key string) (string, error) {
	if !validKey(key) {
		return "", fmt.Errorf("metadata: invalid key %q", key)
	}
	return prefix + key, nil
}

// Entry is a manifest cache entry: the manifests one image request
// produced, by media type.
type Entry struct {
	Built     time.Time                `json:"built"` // local clock of the builder, for NIXERY_CACHE_TTL
	Immutable bool                     `json:"immutable"`
	Manifests map[string]digest.Digest `json:"manifests"`
}

// Fresh reports whether the entry may still be used at now.
func (e *Entry) Fresh(ttl time.Duration, now time.Time) bool {
	return e.Immutable || now.Sub(e.Built) < ttl
}

// Entry reads the manifest cache entry of key; an error wrapping
// storage.ErrNotFound if there is none (an unreadable entry counts as
// none: it is rebuilt and overwritten).
func (c *Store) Entry(ctx context.Context, key string) (Entry, error) {
	var e Entry
	name, err := keyed(manifestsPrefix, key)
	if err != nil {
		return e, err
	}
	raw, err := c.Backend.GetObject(ctx, name)
	if errors.Is(err, storage.ErrTooLarge) {
		return e, fmt.Errorf("manifest cache entry %s is unreadable: %w (%w)", key, storage.ErrNotFound, err)
	}
	if err != nil {
		return e, err
	}
	if json.Unmarshal(raw, &e) != nil || len(e.Manifests) == 0 {
		return Entry{}, fmt.Errorf("manifest cache entry %s is unreadable: %w", key, storage.ErrNotFound)
	}
	for _, d := range e.Manifests {
		if d.Validate() != nil {
			return Entry{}, fmt.Errorf("manifest cache entry %s is unreadable: %w", key, storage.ErrNotFound)
		}
	}
	return e, nil
}

// EntryExists reports whether the manifest cache entry of key is still
// stored (replicas re-check the entries they hold in memory with it).
func (c *Store) EntryExists(ctx context.Context, key string) (bool, error) {
	_, err := c.Entry(ctx, key)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// PutEntry stores the manifest cache entry of key. Writing it counts as a
// use of the image.
func (c *Store) PutEntry(ctx context.Context, key string, e Entry) error {
	name, err := keyed(manifestsPrefix, key)
	if err != nil {
		return err
	}
	data, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return c.Backend.PutObject(ctx, name, data)
}

// RecordUse records that the image of key was pulled: the collector keeps
// images used within its age. It writes the use record only, never the
// entry, so it cannot bring back an image that was collected meanwhile.
func (c *Store) RecordUse(ctx context.Context, key string) error {
	name, err := keyed(imageUsesPrefix, key)
	if err != nil {
		return err
	}
	return c.Backend.PutObject(ctx, name, nil)
}

// RecordDigestUse records that manifest d was pulled by digest (what
// Kubernetes does): the collector keeps it and its blobs.
func (c *Store) RecordDigestUse(ctx context.Context, d digest.Digest) error {
	if d.Validate() != nil || d.Algorithm() != digest.SHA256 {
		return fmt.Errorf("metadata: invalid digest %q", d)
	}
	return c.Backend.PutObject(ctx, digestUsesPrefix+d.Encoded(), nil)
}

// UseInterval is how often a process records in storage that an image or
// a manifest is still pulled: at most one small write per image (or
// digest), process and interval, however many pulls. The collector's age
// must be at least twice as long (config.MinGCAge).
const UseInterval = time.Hour

// maxPulls bounds the digests whose last record is remembered.
const maxPulls = 4096

// RecordDigestPull records a pull of manifest d by digest, at most once
// per UseInterval in this process; a failure only delays the record (it
// is logged).
func (c *Store) RecordDigestPull(ctx context.Context, d digest.Digest) {
	c.pullsMu.Lock()
	if c.pulls == nil {
		c.pulls = bounded.NewExpiring[digest.Digest, struct{}](maxPulls, UseInterval, c.now)
	}
	if _, ok := c.pulls.Get(d); ok {
		c.pullsMu.Unlock()
		return
	}
	c.pulls.Put(d, struct{}{})
	c.pullsMu.Unlock()
	if err := c.RecordDigestUse(ctx, d); err != nil {
		c.logger().Warn("pull by digest not recorded", "digest", d, "err", err)
		c.pulls.Delete(d) // try again next pull
	}
}

// Layer returns the layer cached for key if its entry exists and its blob
// still exists with the recorded size; ok=false for a miss. Storage
// errors are errors, not misses: an outage must not become a storm of
// repacking and uploading.
//
// A build that uses the layer must hold it in its Lease before it relies
// on the blob (see Lease.Hold, which re-checks the blob).
func (c *Store) Layer(ctx context.Context, key string) (l archive.Layer, ok bool, err error) {
	name, err := keyed(layersPrefix, key)
	if err != nil {
		return l, false, err
	}
	raw, err := c.Backend.GetObject(ctx, name)
	if errors.Is(err, storage.ErrNotFound) || errors.Is(err, storage.ErrTooLarge) {
		return l, false, nil // a too large one is unreadable: packed again, overwritten
	}
	if err != nil {
		return l, false, fmt.Errorf("layer cache: %w", err)
	}
	if json.Unmarshal(raw, &l) != nil || l.Digest.Validate() != nil {
		return archive.Layer{}, false, nil // unreadable: packed again, overwritten
	}
	size, err := c.Backend.Stat(ctx, l.Digest)
	if errors.Is(err, storage.ErrNotFound) {
		return archive.Layer{}, false, nil
	}
	if err != nil {
		return archive.Layer{}, false, fmt.Errorf("layer cache: %w", err)
	}
	if size != l.Size {
		return archive.Layer{}, false, nil
	}
	return l, true, nil
}

// PutLayer records that the layer of key was packed into l's blob.
func (c *Store) PutLayer(ctx context.Context, key string, l archive.Layer) error {
	name, err := keyed(layersPrefix, key)
	if err != nil {
		return err
	}
	data, err := json.Marshal(l)
	if err != nil {
		return err
	}
	if err := c.Backend.PutObject(ctx, name, data); err != nil {
		return fmt.Errorf("layer cache: %w", err)
	}
	return nil
}

// SearchList reads the stored package list of a package set (package
// search's own encoding); an error wrapping storage.ErrNotFound if none.
func (c *Store) SearchList(ctx context.Context, identity string) ([]byte, error) {
	return c.Backend.GetObject(ctx, searchPrefix+Key(identity))
}

// PutSearchList stores the package list of a package set.
func (c *Store) PutSearchList(ctx context.Context, identity string, data []byte) error {
	return c.Backend.PutObject(ctx, searchPrefix+Key(identity), data)
}

// Probe reads an object that does not exist: nil means storage answered
// (readiness checks use it).
func (c *Store) Probe(ctx context.Context) error {
	_, err := c.Backend.GetObject(ctx, probeObject)
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	return err
}

// keyOf returns the key part of an object name under prefix.
func keyOf(name, prefix string) string { return strings.TrimPrefix(name, prefix) }

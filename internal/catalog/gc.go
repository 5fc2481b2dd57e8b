package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/nixery/nixery/internal/manifest"
	"github.com/nixery/nixery/internal/storage"
)

// HotRecheck is how often a process re-checks in storage that a manifest
// cache entry it holds in memory still exists (builder drops it when it
// does not). The collector waits EntryGrace, longer than that, between
// deleting expired entries and deleting their blobs, so no process serves
// a manifest whose blobs are gone.
const HotRecheck = time.Minute

// Defaults of GCOptions.
const (
	DefaultEntryGrace = 3 * HotRecheck
	// DefaultBlobGrace keeps blobs written recently whatever refers to
	// them: the upload of a build in progress becomes visible a moment
	// before its lease names it.
	DefaultBlobGrace = time.Hour
	// deleteBatch is how many blobs are deleted at once, concurrently,
	// after each re-reading of the leases: the window a build can slip
	// into stays one request long.
	deleteBatch = 8
)

// GCOptions say what a collection keeps. MaxAge is required; the zero
// values of the others are the defaults.
type GCOptions struct {
	// MaxAge: images (and manifests pulled by digest) not used within it
	// are collected, with every blob and object only they reach.
	MaxAge time.Duration
	// DryRun changes nothing at all (it writes not even the clock probe:
	// ages are then read against the local clock) and reports what a
	// collection would delete.
	DryRun     bool
	EntryGrace time.Duration // see HotRecheck; 0 = DefaultEntryGrace
	BlobGrace  time.Duration // 0 = DefaultBlobGrace

	// Test hooks. Sleep waits out EntryGrace (nil: a timer); Clock reads
	// the storage's clock (nil: a probe object's modification time);
	// BeforeDelete runs before each blob deletion, after the mark.
	Sleep        func(ctx context.Context, d time.Duration) error
	Clock        func(ctx context.Context) (time.Time, error)
	BeforeDelete func(d digest.Digest)
}

// GCReport says what a collection removed (or would remove, in a dry
// run), and what it cost.
type GCReport struct {
	ImagesKept, ImagesDeleted int   // manifest cache entries
	BlobsKept, BlobsDeleted   int   // blobs
	BytesDeleted              int64 // bytes of deleted blobs
	ObjectsDeleted            int   // layer cache entries, details, use records, package lists, leases
	Temporaries               int   // abandoned uploads
	Requests                  int64 // requests to the storage backend
	Duration                  time.Duration
}

func (r GCReport) String() string {
	return fmt.Sprintf("images: %d kept, %d deleted; blobs: %d kept, %d deleted (%d bytes); other objects deleted: %d; abandoned uploads deleted: %d; %d storage requests in %s",
		r.ImagesKept, r.ImagesDeleted, r.BlobsKept, r.BlobsDeleted, r.BytesDeleted, r.ObjectsDeleted, r.Temporaries, r.Requests, r.Duration.Round(time.Millisecond))
}

// GC collects what no image used within opts.MaxAge refers to. It is safe
// while replicas serve and build on the same storage, and while other
// collectors run (deletions are idempotent). The argument, in
// docs/storage.md, in short:
//
//  1. Expired entries (no build or use record within MaxAge, by the
//     storage's clock) are deleted first, with their details and use
//     records. Use records are objects of their own, so a replica that
//     records a pull cannot bring an entry back.
//  2. The collector waits EntryGrace: every process re-checks the entries
//     it holds in memory within HotRecheck and drops the deleted ones, so
//     none serves their manifests any more. A pull from memory during
//     the wait leaves a use record newer than the deletion, and that
//     image's blobs are kept in step 3.
//  3. Mark: every blob reachable from the entries now stored, from
//     manifests pulled by digest within MaxAge, and from live build
//     leases is kept; so is every blob younger than BlobGrace.
//  4. Sweep: right before each blob is deleted the leases are read again
//     (builds hold a blob in their lease before relying on it, and check
//     it still exists after), and the mark is redone whenever LeaseTTL/2
//     has passed since the last one; a lease lives LeaseTTL after its
//     build wrote its entry, so every entry written after a mark is
//     covered by its lease until the next mark sees it.
//  5. Layer cache entries of deleted blobs, orphaned details and use
//     records, old package lists, lapsed leases and uploads abandoned for
//     storage.AbandonedAfter go last.
func (c *Catalog) GC(ctx context.Context, opts GCOptions) (GCReport, error) {
	started := time.Now()
	counted := &countingStore{Backend: c.Store}
	g := &collector{
		c:      &Catalog{Store: counted, Logger: c.Logger, Now: c.Now},
		store:  counted,
		opts:   opts,
		leases: map[string]leaseSeen{},
	}
	rep, err := g.run(ctx)
	rep.Requests = counted.requests
	rep.Duration = time.Since(started)
	return rep, err
}

type collector struct {
	c     *Catalog
	store *countingStore
	opts  GCOptions
	rep   GCReport

	live     map[digest.Digest]bool
	entries  map[string]bool // keys of the entries seen by the last mark
	markedAt time.Time       // storage clock at the last mark
	// markedLocal is the local (monotonic) time of the last mark: ages
	// are read on the storage's clock, durations since on the local one.
	markedLocal time.Time
	expired     map[string]Entry
	// digestRoots are the manifests pulled by digest within the age.
	digestRoots []digest.Digest
	deleted     bool // expired entries were deleted (not a dry run)
	leases      map[string]leaseSeen

	// From the sweep, for tidy: every blob listed, the blobs deleted, and
	// the modification time before which an unmarked blob was old enough.
	blobs, gone map[digest.Digest]bool
	youngBefore time.Time
}

// leaseSeen is a lease as last read. Its content is reused while its
// modification time stays the same, but only once it was read at least
// modTimeResolution after a listing first showed that time: a storage
// stamps times in ticks (S3 whole seconds, file systems a coarse clock),
// so a lease rewritten in the tick of an earlier read keeps its time.
type leaseSeen struct {
	mod     time.Time
	listed  time.Time // local clock, when a listing first showed mod
	settled bool      // read modTimeResolution or more after listed
	digests []digest.Digest
}

// modTimeResolution bounds the tick of the modification times storage
// reports: one second on S3, milliseconds on GCS, a coarse clock tick on
// local file systems (two seconds on FAT).
const modTimeResolution = 2 * time.Second

func (g *collector) del(ctx context.Context, name string) error {
	g.rep.ObjectsDeleted++
	if g.opts.DryRun {
		return nil
	}
	return g.store.DeleteObject(ctx, name)
}

// clock reads the storage's clock: the modification time the storage
// gives a probe object written now. A dry run writes nothing and uses the
// local clock.
func (g *collector) clock(ctx context.Context) (time.Time, error) {
	if g.opts.Clock != nil {
		return g.opts.Clock(ctx)
	}
	if g.opts.DryRun {
		return g.c.now(), nil
	}
	return storageClock(ctx, g.store)
}

// storageClock reads the storage's clock: the modification time the
// storage gives a probe object written now.
func storageClock(ctx context.Context, store storage.Backend) (time.Time, error) {
	if err := store.PutObject(ctx, clockObject, nil); err != nil {
		return time.Time{}, err
	}
	var t time.Time
	err := store.ListObjects(ctx, clockObject, func(name string, mod time.Time) error {
		if name == clockObject {
			t = mod
		}
		return nil
	})
	if err == nil && t.IsZero() {
		err = errors.New("the storage's clock probe was not listed")
	}
	return t, err
}

// DeleteAbandonedUploads removes the uploads that nothing has written to
// for storage.AbandonedAfter, judged on the storage's clock as the
// collector judges every age: a server whose own clock runs ahead must not
// take a replica's upload in progress for abandoned.
func (c *Catalog) DeleteAbandonedUploads(ctx context.Context) (int, error) {
	now, err := storageClock(ctx, c.Store)
	if err != nil {
		return 0, fmt.Errorf("reading the storage's clock: %w", err)
	}
	return c.Store.DeleteTemporaries(ctx, now.Add(-storage.AbandonedAfter))
}

// storageNow estimates the storage's clock from the last mark.
func (g *collector) storageNow() time.Time { return g.markedAt.Add(time.Since(g.markedLocal)) }

// list returns the objects under prefix with their modification times.
func (g *collector) list(ctx context.Context, prefix string) (map[string]time.Time, error) {
	out := map[string]time.Time{}
	err := g.store.ListObjects(ctx, prefix, func(name string, mod time.Time) error {
		out[keyOf(name, prefix)] = mod
		return nil
	})
	return out, err
}

func (g *collector) run(ctx context.Context) (GCReport, error) {
	o := &g.opts
	if o.MaxAge <= 0 {
		return g.rep, errors.New("gc: the maximum age must be positive")
	}
	if o.EntryGrace <= 0 {
		o.EntryGrace = DefaultEntryGrace
	}
	if o.BlobGrace <= 0 {
		o.BlobGrace = DefaultBlobGrace
	}
	if o.Sleep == nil {
		o.Sleep = func(ctx context.Context, d time.Duration) error {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-t.C:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	t0, err := g.clock(ctx)
	if err != nil {
		return g.rep, fmt.Errorf("gc: reading the storage's clock: %w", err)
	}
	cutoff := t0.Add(-o.MaxAge)
	// The steps of the package doc, in order.
	if err := g.expire(ctx, cutoff); err != nil {
		return g.rep, err
	}
	if err := g.grace(ctx); err != nil {
		return g.rep, err
	}
	if err := g.markRoots(ctx, cutoff); err != nil {
		return g.rep, err
	}
	if err := g.sweep(ctx); err != nil {
		return g.rep, err
	}
	return g.rep, g.tidy(ctx, t0, cutoff)
}

// expire deletes the entries not written nor pulled since cutoff (step 1).
func (g *collector) expire(ctx context.Context, cutoff time.Time) error {
	entries, err := g.list(ctx, manifestsPrefix)
	if err != nil {
		return err
	}
	uses, err := g.list(ctx, imageUsesPrefix)
	if err != nil {
		return err
	}
	g.expired = map[string]Entry{}
	for key, mod := range entries {
		if !validKey(key) {
			continue
		}
		used := mod
		if u := uses[key]; u.After(used) {
			used = u
		}
		if !used.Before(cutoff) {
			continue
		}
		e, err := g.c.Entry(ctx, key)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		g.expired[key] = e
	}
	g.rep.ImagesDeleted = len(g.expired)
	for key := range g.expired {
		// The use record first: one written after this is a pull from
		// a replica's memory, seen in step 3.
		for _, name := range []string{imageUsesPrefix + key, manifestsPrefix + key, detailsPrefix + key} {
			if !g.opts.DryRun {
				if err := g.store.DeleteObject(ctx, name); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// grace gives the replicas the time to drop the deleted entries from
// memory (step 2).
func (g *collector) grace(ctx context.Context) error {
	if len(g.expired) == 0 || g.opts.DryRun {
		return nil
	}
	g.deleted = true
	return g.opts.Sleep(ctx, g.opts.EntryGrace)
}

// markRoots marks from the entries and the manifests pulled by digest
// since cutoff (step 3); older digest use records go.
func (g *collector) markRoots(ctx context.Context, cutoff time.Time) error {
	digestUses, err := g.list(ctx, digestUsesPrefix)
	if err != nil {
		return err
	}
	for hex, mod := range digestUses {
		d := digest.NewDigestFromEncoded(digest.SHA256, hex)
		if d.Validate() != nil {
			continue
		}
		if mod.Before(cutoff) {
			if err := g.del(ctx, digestUsesPrefix+hex); err != nil {
				return err
			}
			continue
		}
		g.digestRoots = append(g.digestRoots, d)
	}
	if err := g.mark(ctx); err != nil {
		return err
	}
	g.rep.ImagesKept = len(g.entries)
	return nil
}

// sweep deletes the blobs nothing marked that are older than the blob
// grace, in batches, with the leases read again before each batch and a
// new mark when the last one is old (step 4). It records every blob seen
// and every blob deleted for tidy.
func (g *collector) sweep(ctx context.Context) error {
	o := &g.opts
	type blob struct {
		d    digest.Digest
		size int64
	}
	var candidates []blob
	g.blobs, g.gone = map[digest.Digest]bool{}, map[digest.Digest]bool{}
	g.youngBefore = g.markedAt.Add(-o.BlobGrace)
	err := g.store.ListBlobs(ctx, func(d digest.Digest, size int64, mod time.Time) error {
		g.blobs[d] = true
		if g.live[d] || !mod.Before(g.youngBefore) {
			g.rep.BlobsKept++
			return nil
		}
		candidates = append(candidates, blob{d, size})
		return nil
	})
	if err != nil {
		return err
	}
	for len(candidates) > 0 {
		batch := candidates[:min(deleteBatch, len(candidates))]
		candidates = candidates[len(batch):]
		if o.BeforeDelete != nil {
			for _, b := range batch {
				o.BeforeDelete(b.d)
			}
		}
		if !o.DryRun {
			if time.Since(g.markedLocal) > LeaseTTL/2 {
				if err := g.mark(ctx); err != nil {
					return err
				}
			}
			// The leases once more, right before the deletions.
			if err := g.markLeases(ctx, g.storageNow()); err != nil {
				return err
			}
		}
		batch = slices.DeleteFunc(slices.Clone(batch), func(b blob) bool {
			if g.live[b.d] {
				g.rep.BlobsKept++
				return true
			}
			return false
		})
		if !o.DryRun {
			eg, ectx := errgroup.WithContext(ctx)
			for _, b := range batch {
				eg.Go(func() error { return g.store.DeleteBlob(ectx, b.d) })
			}
			if err := eg.Wait(); err != nil {
				return err
			}
		}
		for _, b := range batch {
			g.gone[b.d] = true
			g.rep.BlobsDeleted++
			g.rep.BytesDeleted += b.size
		}
	}
	return nil
}

// tidy deletes everything else that refers to nothing any more (step 5):
// layer cache entries of deleted or missing blobs, orphaned details and
// use records, package lists and resolutions older than cutoff, lapsed
// leases and claims, and uploads abandoned since before t0 less
// storage.AbandonedAfter.
func (g *collector) tidy(ctx context.Context, t0, cutoff time.Time) error {
	settled := g.markedAt.Add(-g.opts.EntryGrace)
	// Layer cache entries are read only when blobs went: an entry whose
	// blob vanished otherwise is a miss that packing overwrites anyway.
	layerEntries := map[string]time.Time{}
	if len(g.gone) > 0 {
		var err error
		if layerEntries, err = g.list(ctx, layersPrefix); err != nil {
			return err
		}
	}
	for key, mod := range layerEntries {
		raw, err := g.store.GetObject(ctx, layersPrefix+key)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil && !errors.Is(err, storage.ErrTooLarge) {
			return err
		}
		var l struct{ Digest digest.Digest }
		unreadable := err != nil || json.Unmarshal(raw, &l) != nil || l.Digest.Validate() != nil
		if g.gone[l.Digest] || ((unreadable || !g.blobs[l.Digest]) && mod.Before(g.youngBefore)) {
			if err := g.del(ctx, layersPrefix+key); err != nil {
				return err
			}
		}
	}
	// Details and use records of entries that are gone.
	if err := g.deleteUnder(ctx, []string{detailsPrefix, imageUsesPrefix}, func(key string, mod time.Time) bool {
		if _, wasExpired := g.expired[key]; g.opts.DryRun && wasExpired {
			return false // counted with the entry
		}
		return !g.entries[key] && mod.Before(settled)
	}); err != nil {
		return err
	}
	// Package lists and package resolutions not written within the age
	// (an evaluation writes them again when it needs them).
	if err := g.deleteUnder(ctx, []string{searchPrefix, resolvedPrefix}, func(_ string, mod time.Time) bool {
		return mod.Before(cutoff)
	}); err != nil {
		return err
	}
	// Lapsed build leases and build claims (whose holders died).
	if err := g.deleteUnder(ctx, []string{leasesPrefix, flightsPrefix}, func(_ string, mod time.Time) bool {
		return mod.Before(g.markedAt.Add(-2 * LeaseTTL))
	}); err != nil {
		return err
	}
	if !g.opts.DryRun {
		n, err := g.store.DeleteTemporaries(ctx, t0.Add(-storage.AbandonedAfter))
		if err != nil {
			return err
		}
		g.rep.Temporaries = n
	}
	return nil
}

// deleteUnder deletes the objects under prefixes for which gone says so.
func (g *collector) deleteUnder(ctx context.Context, prefixes []string, gone func(key string, mod time.Time) bool) error {
	for _, prefix := range prefixes {
		objs, err := g.list(ctx, prefix)
		if err != nil {
			return err
		}
		for key, mod := range objs {
			if gone(key, mod) {
				if err := g.del(ctx, prefix+key); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// mark (re)computes the live blobs from the entries stored now, the
// entries deleted in step 1 that were pulled since, the manifests pulled
// by digest, and the live leases.
func (g *collector) mark(ctx context.Context) error {
	now, err := g.clock(ctx)
	if err != nil {
		return err
	}
	g.markedAt, g.markedLocal = now, time.Now()
	g.live = map[digest.Digest]bool{}
	g.entries = map[string]bool{}
	entries, err := g.list(ctx, manifestsPrefix)
	if err != nil {
		return err
	}
	for key := range entries {
		if _, expired := g.expired[key]; expired && g.opts.DryRun {
			continue // a dry run counts it as deleted
		}
		e, err := g.c.Entry(ctx, key)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		g.entries[key] = true
		if err := g.markEntry(ctx, e); err != nil {
			return err
		}
	}
	if g.deleted {
		// Step 1 deleted the use records of expired entries before the
		// entries: any there is now was written since.
		uses, err := g.list(ctx, imageUsesPrefix)
		if err != nil {
			return err
		}
		for key, e := range g.expired {
			if _, ok := uses[key]; ok {
				if err := g.markEntry(ctx, e); err != nil {
					return err
				}
			}
		}
	}
	for _, d := range g.digestRoots {
		if err := g.markManifest(ctx, d); err != nil {
			return err
		}
	}
	return g.markLeases(ctx, now)
}

// markLeases adds the blobs of the leases live at now to the live set.
// A lease is read again unless its time is unchanged and settled (see
// leaseSeen).
func (g *collector) markLeases(ctx context.Context, now time.Time) error {
	leases, err := g.list(ctx, leasesPrefix)
	if err != nil {
		return err
	}
	// Every lease listed existed, with its time, by now: a write after
	// a read that begins modTimeResolution later gets a later time.
	listed := time.Now()
	for id, mod := range leases {
		if mod.Before(now.Add(-LeaseTTL)) {
			continue // lapsed: its build died or ended long ago
		}
		seen, ok := g.leases[id]
		if !ok || !seen.mod.Equal(mod) {
			seen = leaseSeen{mod: mod, listed: listed}
		}
		if !seen.settled {
			readAt := time.Now()
			raw, err := g.store.GetObject(ctx, leasesPrefix+id)
			if errors.Is(err, storage.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			seen.digests = nil
			if err := json.Unmarshal(raw, &seen.digests); err != nil {
				// Nixery writes every lease whole: this one was
				// damaged, and its blobs cannot be known. Stop
				// rather than sweep them; it lapses by itself.
				return fmt.Errorf("build lease %s is unreadable: %w", id, err)
			}
			seen.settled = readAt.Sub(seen.listed) >= modTimeResolution
			g.leases[id] = seen
		}
		for _, d := range seen.digests {
			g.live[d] = true
		}
	}
	return nil
}

func (g *collector) markEntry(ctx context.Context, e Entry) error {
	for _, d := range e.Manifests {
		if err := g.markManifest(ctx, d); err != nil {
			return err
		}
	}
	return nil
}

// markManifest adds a manifest and the blobs it references to live.
func (g *collector) markManifest(ctx context.Context, d digest.Digest) error {
	if g.live[d] {
		return nil
	}
	data, err := readManifest(ctx, g.store, d)
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	g.live[d] = true
	refs, err := manifest.References(data)
	if err != nil {
		return nil // not a manifest: nothing else to keep
	}
	for _, r := range refs {
		g.live[r] = true
	}
	return nil
}

// ReadManifest reads blob d if it can be a manifest (manifest.Read: its
// size is checked before anything is read); otherwise an error wrapping
// storage.ErrNotFound. The builder reads its cached manifests with it.
func (c *Catalog) ReadManifest(ctx context.Context, d digest.Digest) ([]byte, error) {
	return readManifest(ctx, c.Store, d)
}

func readManifest(ctx context.Context, store storage.Backend, d digest.Digest) ([]byte, error) {
	r, err := store.Open(ctx, d)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	rr := &readErr{r: r}
	data, err := manifest.Read(rr, r.Size())
	if rr.err != nil {
		// The storage failed mid-read (a bucket's connection cut off
		// reads as a short body, io.ErrUnexpectedEOF, which manifest.Read
		// takes for a blob too short to be a manifest). That says
		// nothing about the blob: the collector must stop rather than
		// take a live manifest for none and sweep its blobs.
		return nil, fmt.Errorf("reading manifest %s: %w", d, rr.err)
	}
	if errors.Is(err, manifest.ErrNotManifest) {
		return nil, fmt.Errorf("blob %s: %w (%w)", d, storage.ErrNotFound, err)
	}
	return data, err
}

// readErr remembers the first error other than io.EOF its reader gave.
type readErr struct {
	r   io.Reader
	err error
}

func (e *readErr) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}

// countingStore counts the requests a collection makes, for its report.
type countingStore struct {
	storage.Backend
	mu       sync.Mutex
	requests int64
}

func (s *countingStore) count() {
	s.mu.Lock()
	s.requests++
	s.mu.Unlock()
}

func (s *countingStore) Open(ctx context.Context, d digest.Digest) (storage.Reader, error) {
	s.count()
	return s.Backend.Open(ctx, d)
}
func (s *countingStore) Stat(ctx context.Context, d digest.Digest) (int64, error) {
	s.count()
	return s.Backend.Stat(ctx, d)
}
func (s *countingStore) GetObject(ctx context.Context, name string) ([]byte, error) {
	s.count()
	return s.Backend.GetObject(ctx, name)
}
func (s *countingStore) PutObject(ctx context.Context, name string, data []byte) error {
	s.count()
	return s.Backend.PutObject(ctx, name, data)
}
func (s *countingStore) ListBlobs(ctx context.Context, fn func(digest.Digest, int64, time.Time) error) error {
	s.count()
	return s.Backend.ListBlobs(ctx, fn)
}
func (s *countingStore) ListObjects(ctx context.Context, prefix string, fn func(string, time.Time) error) error {
	s.count()
	return s.Backend.ListObjects(ctx, prefix, fn)
}
func (s *countingStore) DeleteBlob(ctx context.Context, d digest.Digest) error {
	s.count()
	return s.Backend.DeleteBlob(ctx, d)
}
func (s *countingStore) DeleteObject(ctx context.Context, name string) error {
	s.count()
	return s.Backend.DeleteObject(ctx, name)
}
func (s *countingStore) DeleteTemporaries(ctx context.Context, cutoff time.Time) (int, error) {
	s.count()
	return s.Backend.DeleteTemporaries(ctx, cutoff)
}

var _ storage.Backend = (*countingStore)(nil)

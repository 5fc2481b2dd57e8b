// Package gc collects garbage in Nixery's storage: mark and sweep over
// every blob and named object, safe while replicas serve and build on the
// same storage and while other collections run, with a dry run
// (docs/storage.md says why no live image loses a blob).
//
// It names no object itself: it asks the metadata store, the one owner of every
// named object, to list, read and delete them by kind and key, and reads
// every age on the storage's clock (metadata.StorageClock). Blobs it lists
// and deletes through the storage backend directly. Collect runs one
// collection (`nixery gc`); Collector runs them in-process at an interval,
// on one replica at a time (NIXERY_GC_INTERVAL); Metrics counts them.
package gc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/nixery/nixery/internal/manifest"
	"github.com/nixery/nixery/internal/metadata"
	"github.com/nixery/nixery/internal/storage"
)

// Defaults of Options.
const (
	DefaultEntryGrace = 3 * metadata.HotRecheck
	// DefaultBlobGrace keeps blobs written recently whatever refers to
	// them: the upload of a build in progress becomes visible a moment
	// before its lease names it.
	DefaultBlobGrace = time.Hour
	// deleteBatch is how many blobs are deleted at once, concurrently,
	// after each re-reading of the leases: the window a build can slip
	// into stays one request long.
	deleteBatch = 8
)

// Options say what a collection keeps. MaxAge is required; the zero
// values of the others are the defaults.
type Options struct {
	// MaxAge: images (and manifests pulled by digest) not used within it
	// are collected, with every blob and object only they reach.
	MaxAge time.Duration
	// DryRun changes nothing at all (it writes not even the clock probe:
	// ages are then read against the local clock) and reports what a
	// collection would delete.
	DryRun     bool
	EntryGrace time.Duration // see metadata.HotRecheck; 0 = DefaultEntryGrace
	BlobGrace  time.Duration // 0 = DefaultBlobGrace

	// Test hooks. Sleep waits out EntryGrace (nil: a timer); Clock reads
	// the storage's clock (nil: a probe object's modification time);
	// BeforeDelete runs before each blob deletion, after the mark.
	Sleep        func(ctx context.Context, d time.Duration) error
	Clock        func(ctx context.Context) (time.Time, error)
	BeforeDelete func(d digest.Digest)
}

// Report says what a collection removed (or would remove, in a dry
// run), and what it cost.
type Report struct {
	ImagesKept, ImagesDeleted int   // manifest cache entries
	BlobsKept, BlobsDeleted   int   // blobs
	BytesDeleted              int64 // bytes of deleted blobs
	ObjectsDeleted            int   // layer cache entries, details, use records, package lists, leases
	Temporaries               int   // abandoned uploads
	Requests                  int64 // requests to the storage backend
	Duration                  time.Duration
}

func (r Report) String() string {
	return fmt.Sprintf("images: %d kept, %d deleted; blobs: %d kept, %d deleted (%d bytes); other objects deleted: %d; abandoned uploads deleted: %d; %d storage requests in %s",
		r.ImagesKept, r.ImagesDeleted, r.BlobsKept, r.BlobsDeleted, r.BytesDeleted, r.ObjectsDeleted, r.Temporaries, r.Requests, r.Duration.Round(time.Millisecond))
}

// Collect collects what no image used within opts.MaxAge refers to, in
// the storage of cat. It is safe
// while replicas serve and build on the same storage, and while other
// collectors run (deletions are idempotent). The argument, in
// docs/storage.md, in short:
//
//  1. Expired entries (no build or use record within MaxAge, by the
//     storage's clock) are deleted first, with their details and use
//     records. Use records are objects of their own, so a replica that
//     records a pull cannot bring an entry back.
//  2. The collector waits EntryGrace: every process re-checks the entries
//     it holds in memory within metadata.HotRecheck and drops the deleted ones, so
//     none serves their manifests any more. A pull from memory during
//     the wait leaves a use record newer than the deletion, and that
//     image's blobs are kept in step 3.
//  3. Mark: every blob reachable from the entries now stored, from
//     manifests pulled by digest within MaxAge, and from live build
//     leases is kept; so is every blob younger than BlobGrace.
//  4. Sweep: right before each blob is deleted the leases are read again
//     (builds hold a blob in their lease before relying on it, and check
//     it still exists after), and the mark is redone whenever
//     metadata.LeaseTTL/2 has passed since the last one; a lease lives
//     metadata.LeaseTTL after its
//     build wrote its entry, so every entry written after a mark is
//     covered by its lease until the next mark sees it.
//  5. Layer cache entries of deleted blobs, orphaned details and use
//     records, old package lists, lapsed leases and uploads abandoned for
//     storage.AbandonedAfter go last.
func Collect(ctx context.Context, cat *metadata.Store, opts Options) (Report, error) {
	started := time.Now()
	counted := &countingStore{Backend: cat.Backend}
	g := &collector{
		// The metadata store over the counting store: every request counts.
		c:      &metadata.Store{Backend: counted, Logger: cat.Logger, Now: cat.Now},
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
	c     *metadata.Store
	store *countingStore // blobs are listed and deleted here directly
	opts  Options
	rep   Report

	live    map[digest.Digest]bool
	entries map[string]bool // keys of the entries seen by the last mark
	// referrers are the keys of the artifact sets by subject, as the
	// last mark listed them.
	referrers map[digest.Digest][]string
	markedAt  time.Time // storage clock at the last mark
	// markedLocal is the local (monotonic) time of the last mark: ages
	// are read on the storage's clock, durations since on the local one.
	markedLocal time.Time
	expired     map[string]metadata.Entry
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

func (g *collector) del(ctx context.Context, k metadata.Kind, key string) error {
	g.rep.ObjectsDeleted++
	if g.opts.DryRun {
		return nil
	}
	return g.c.Delete(ctx, k, key)
}

// clock reads the storage's clock: the modification time the storage
// gives a probe object written now. A dry run writes nothing and uses the
// local clock.
func (g *collector) clock(ctx context.Context) (time.Time, error) {
	if g.opts.Clock != nil {
		return g.opts.Clock(ctx)
	}
	if g.opts.DryRun {
		if g.c.Now != nil {
			return g.c.Now(), nil
		}
		return time.Now(), nil
	}
	return g.c.StorageClock(ctx)
}

// storageNow estimates the storage's clock from the last mark.
func (g *collector) storageNow() time.Time { return g.markedAt.Add(time.Since(g.markedLocal)) }

func (g *collector) run(ctx context.Context) (Report, error) {
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
	entries, err := g.c.List(ctx, metadata.KindEntry)
	if err != nil {
		return err
	}
	uses, err := g.c.List(ctx, metadata.KindImageUse)
	if err != nil {
		return err
	}
	g.expired = map[string]metadata.Entry{}
	for key, mod := range entries {
		if !metadata.ValidKey(key) {
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
		for _, kind := range []metadata.Kind{metadata.KindImageUse, metadata.KindEntry, metadata.KindDetails} {
			if !g.opts.DryRun {
				if err := g.c.Delete(ctx, kind, key); err != nil {
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
	digestUses, err := g.c.List(ctx, metadata.KindDigestUse)
	if err != nil {
		return err
	}
	for key, mod := range digestUses {
		d := digest.Digest(key)
		if d.Validate() != nil {
			continue
		}
		if mod.Before(cutoff) {
			if err := g.del(ctx, metadata.KindDigestUse, key); err != nil {
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
			if time.Since(g.markedLocal) > metadata.LeaseTTL/2 {
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
// use records, the artifact sets of deleted or missing manifests, package lists and resolutions older than cutoff, lapsed
// leases and claims, and uploads abandoned since before t0 less
// storage.AbandonedAfter.
func (g *collector) tidy(ctx context.Context, t0, cutoff time.Time) error {
	settled := g.markedAt.Add(-g.opts.EntryGrace)
	// Layer cache entries are read only when blobs went: an entry whose
	// blob vanished otherwise is a miss that packing overwrites anyway.
	layerEntries := map[string]time.Time{}
	if len(g.gone) > 0 {
		var err error
		if layerEntries, err = g.c.List(ctx, metadata.KindLayer); err != nil {
			return err
		}
	}
	for key, mod := range layerEntries {
		d, readable, err := g.c.LayerBlob(ctx, key)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if g.gone[d] || ((!readable || !g.blobs[d]) && mod.Before(g.youngBefore)) {
			if err := g.del(ctx, metadata.KindLayer, key); err != nil {
				return err
			}
		}
	}
	// Details and use records of entries that are gone.
	if err := g.deleteUnder(ctx, []metadata.Kind{metadata.KindDetails, metadata.KindImageUse}, func(key string, mod time.Time) bool {
		if _, wasExpired := g.expired[key]; g.opts.DryRun && wasExpired {
			return false // counted with the entry
		}
		return !g.entries[key] && mod.Before(settled)
	}); err != nil {
		return err
	}
	// The artifact sets of manifests that are gone (never of one that is
	// still stored, however young: it may be an image being published).
	if err := g.deleteUnder(ctx, []metadata.Kind{metadata.KindReferrers}, func(key string, mod time.Time) bool {
		subject := metadata.ReferrersSubject(key)
		return (subject == "" || g.gone[subject] || !g.blobs[subject]) && mod.Before(g.youngBefore)
	}); err != nil {
		return err
	}
	// Package lists and package resolutions not written within the age
	// (an evaluation writes them again when it needs them).
	if err := g.deleteUnder(ctx, []metadata.Kind{metadata.KindSearchList, metadata.KindPackage}, func(_ string, mod time.Time) bool {
		return mod.Before(cutoff)
	}); err != nil {
		return err
	}
	// Lapsed build leases and build claims (whose holders died).
	if err := g.deleteUnder(ctx, []metadata.Kind{metadata.KindLease, metadata.KindClaim}, func(_ string, mod time.Time) bool {
		return mod.Before(g.markedAt.Add(-2 * metadata.LeaseTTL))
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

// deleteUnder deletes the objects of kinds for which gone says so.
func (g *collector) deleteUnder(ctx context.Context, kinds []metadata.Kind, gone func(key string, mod time.Time) bool) error {
	for _, kind := range kinds {
		objs, err := g.c.List(ctx, kind)
		if err != nil {
			return err
		}
		for key, mod := range objs {
			if gone(key, mod) {
				if err := g.del(ctx, kind, key); err != nil {
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
	// The artifact sets, by subject (one listing, not one a manifest).
	sets, err := g.c.List(ctx, metadata.KindReferrers)
	if err != nil {
		return err
	}
	g.referrers = map[digest.Digest][]string{}
	for key := range sets {
		if subject := metadata.ReferrersSubject(key); subject != "" {
			g.referrers[subject] = append(g.referrers[subject], key)
		}
	}
	entries, err := g.c.List(ctx, metadata.KindEntry)
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
		uses, err := g.c.List(ctx, metadata.KindImageUse)
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
		if err := g.markImage(ctx, d); err != nil {
			return err
		}
	}
	return g.markLeases(ctx, now)
}

// markLeases adds the blobs of the leases live at now to the live set.
// A lease is read again unless its time is unchanged and settled (see
// leaseSeen).
func (g *collector) markLeases(ctx context.Context, now time.Time) error {
	leases, err := g.c.List(ctx, metadata.KindLease)
	if err != nil {
		return err
	}
	// Every lease listed existed, with its time, by now: a write after
	// a read that begins modTimeResolution later gets a later time.
	listed := time.Now()
	for id, mod := range leases {
		if mod.Before(now.Add(-metadata.LeaseTTL)) {
			continue // lapsed: its build died or ended long ago
		}
		seen, ok := g.leases[id]
		if !ok || !seen.mod.Equal(mod) {
			seen = leaseSeen{mod: mod, listed: listed}
		}
		if !seen.settled {
			readAt := time.Now()
			digests, err := g.c.LeaseBlobs(ctx, id)
			if errors.Is(err, storage.ErrNotFound) {
				continue
			}
			if err != nil {
				// A damaged lease names blobs nobody can know: stop
				// rather than sweep them; it lapses by itself.
				return err
			}
			seen.digests = digests
			seen.settled = readAt.Sub(seen.listed) >= modTimeResolution
			g.leases[id] = seen
		}
		for _, d := range seen.digests {
			g.live[d] = true
		}
	}
	return nil
}

func (g *collector) markEntry(ctx context.Context, e metadata.Entry) error {
	for _, d := range e.Manifests {
		if err := g.markImage(ctx, d); err != nil {
			return err
		}
	}
	return nil
}

// markImage adds an image manifest, the blobs it references, and its
// artifacts (the manifests its referrers set names, with their blobs) to
// live. An artifact never keeps its subject: only its subject keeps it.
func (g *collector) markImage(ctx context.Context, d digest.Digest) error {
	if g.live[d] {
		return nil
	}
	if err := g.markManifest(ctx, d); err != nil || !g.live[d] {
		return err
	}
	for _, key := range g.referrers[d] {
		refs, err := g.c.ReferrersOf(ctx, key)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		for _, a := range refs.Digests() {
			if err := g.markManifest(ctx, a); err != nil {
				return err
			}
		}
	}
	return nil
}

// markManifest adds a manifest and the blobs it references to live.
func (g *collector) markManifest(ctx context.Context, d digest.Digest) error {
	if g.live[d] {
		return nil
	}
	data, err := g.c.ReadManifest(ctx, d)
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

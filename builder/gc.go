package builder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/nixery/nixery/storage"
)

// GCReport says what a garbage collection removed (or would remove, in a
// dry run).
type GCReport struct {
	ImagesKept, ImagesDeleted int   // manifest cache entries
	BlobsKept, BlobsDeleted   int   // blobs
	BytesDeleted              int64 // bytes of deleted blobs
	ObjectsDeleted            int   // layer cache entries and image details
	Temporaries               int   // abandoned uploads
}

func (r GCReport) String() string {
	return fmt.Sprintf("images: %d kept, %d deleted; blobs: %d kept, %d deleted (%d bytes); cache entries deleted: %d; abandoned uploads deleted: %d",
		r.ImagesKept, r.ImagesDeleted, r.BlobsKept, r.BlobsDeleted, r.BytesDeleted, r.ObjectsDeleted, r.Temporaries)
}

// GC deletes what no image used within maxAge refers to:
//
//  1. manifest cache entries not used (built or pulled) within maxAge go,
//     with their image details;
//  2. every blob the remaining entries reach (manifests, configs, layers)
//     is kept; other blobs older than maxAge go (younger ones may belong
//     to a build in progress);
//  3. layer cache entries whose blob is gone go, and so do uploads
//     abandoned before the cutoff.
//
// With dryRun nothing is deleted and the report says what would be.
// Replicas may keep serving while it runs: an image used during the
// collection has a fresh entry, and a blob younger than maxAge is kept.
func GC(ctx context.Context, store storage.Backend, maxAge time.Duration, dryRun bool) (GCReport, error) {
	var rep GCReport
	lister, ok := store.(storage.Lister)
	if !ok {
		return rep, fmt.Errorf("%s cannot list its contents", store)
	}
	started := time.Now()
	cutoff := started.Add(-maxAge)
	live := map[digest.Digest]bool{}
	liveImages := map[string]bool{}
	del := func(name string) error {
		if dryRun {
			return nil
		}
		return lister.DeleteObject(ctx, name)
	}

	// 1. Manifest cache entries.
	var names []string
	var times []time.Time
	err := lister.ListObjects(ctx, "manifests/", func(name string, mod time.Time) error {
		names, times = append(names, name), append(times, mod)
		return nil
	})
	if err != nil {
		return rep, err
	}
	for i, name := range names {
		key := strings.TrimPrefix(name, "manifests/")
		e, found, err := readEntry(ctx, store, name)
		if err != nil {
			return rep, err
		}
		if !found {
			continue
		}
		used := times[i]
		if e.Used.After(used) {
			used = e.Used
		}
		if used.Before(cutoff) || len(e.Manifests) == 0 {
			rep.ImagesDeleted++
			if err := del(name); err != nil {
				return rep, err
			}
			if err := del("details/" + key); err != nil {
				return rep, err
			}
			continue
		}
		rep.ImagesKept++
		liveImages[key] = true
		if err := markEntry(ctx, store, e, live); err != nil {
			return rep, err
		}
	}

	// 2. Blobs.
	type blob struct {
		d    digest.Digest
		size int64
	}
	var dead []blob
	err = lister.ListBlobs(ctx, func(d digest.Digest, size int64, mod time.Time) error {
		if live[d] || !mod.Before(cutoff) {
			rep.BlobsKept++
			return nil
		}
		dead = append(dead, blob{d, size})
		return nil
	})
	if err != nil {
		return rep, err
	}
	// A build that finished meanwhile may have reused old blobs (a layer
	// from the layer cache is not uploaded again): keep what images
	// recorded since the collection started refer to.
	err = lister.ListObjects(ctx, "manifests/", func(name string, mod time.Time) error {
		if mod.Before(started.Add(-time.Minute)) {
			return nil
		}
		e, found, err := readEntry(ctx, store, name)
		if err != nil || !found {
			return err
		}
		return markEntry(ctx, store, e, live)
	})
	if err != nil {
		return rep, err
	}
	before := len(dead)
	dead = slices.DeleteFunc(dead, func(b blob) bool { return live[b.d] })
	rep.BlobsKept += before - len(dead)
	for _, b := range dead {
		if !dryRun {
			if err := lister.DeleteBlob(ctx, b.d); err != nil {
				return rep, err
			}
		}
		rep.BlobsDeleted++
		rep.BytesDeleted += b.size
	}

	// 3. Layer cache entries, orphaned details, abandoned uploads.
	deadBlob := map[digest.Digest]bool{}
	for _, b := range dead {
		deadBlob[b.d] = true
	}
	var orphans []string
	err = lister.ListObjects(ctx, "layers/", func(name string, mod time.Time) error {
		raw, err := store.GetObject(ctx, name)
		if err != nil {
			return nil // gone meanwhile
		}
		var l struct{ Digest digest.Digest }
		if json.Unmarshal(raw, &l) != nil || deadBlob[l.Digest] {
			orphans = append(orphans, name)
		}
		return nil
	})
	if err != nil {
		return rep, err
	}
	err = lister.ListObjects(ctx, "details/", func(name string, mod time.Time) error {
		if !liveImages[strings.TrimPrefix(name, "details/")] && mod.Before(cutoff) {
			orphans = append(orphans, name)
		}
		return nil
	})
	if err != nil {
		return rep, err
	}
	for _, name := range orphans {
		if err := del(name); err != nil {
			return rep, err
		}
		rep.ObjectsDeleted++
	}
	if !dryRun {
		// Uploads younger than a day may be in progress in a replica.
		tmpCutoff := cutoff
		if day := started.Add(-24 * time.Hour); day.Before(tmpCutoff) {
			tmpCutoff = day
		}
		n, err := lister.DeleteTemporaries(ctx, tmpCutoff)
		if err != nil {
			return rep, err
		}
		rep.Temporaries = n
	}
	return rep, nil
}

// readEntry reads a manifest cache entry; found is false if it is gone.
// An unreadable entry reads as empty, which counts as unused.
func readEntry(ctx context.Context, store storage.Backend, name string) (e manifestEntry, found bool, err error) {
	raw, err := store.GetObject(ctx, name)
	if errors.Is(err, storage.ErrNotFound) {
		return e, false, nil
	}
	if err != nil {
		return e, false, err
	}
	_ = json.Unmarshal(raw, &e)
	return e, true, nil
}

// markEntry adds the manifests of a cache entry and their blobs to live.
func markEntry(ctx context.Context, store storage.Backend, e manifestEntry, live map[digest.Digest]bool) error {
	for _, md := range e.Manifests {
		if err := markManifest(ctx, store, md, live); err != nil {
			return err
		}
	}
	return nil
}

// markManifest adds a manifest and the blobs it references to live.
func markManifest(ctx context.Context, store storage.Backend, md digest.Digest, live map[digest.Digest]bool) error {
	data, err := storage.Get(ctx, store, md)
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	live[md] = true
	var m struct {
		Config struct{ Digest digest.Digest }
		Layers []struct{ Digest digest.Digest }
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("manifest %s: %w", md, err)
	}
	live[m.Config.Digest] = true
	for _, l := range m.Layers {
		live[l.Digest] = true
	}
	return nil
}

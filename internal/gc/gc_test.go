package gc_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixery/nixery/internal/archive"
	"github.com/nixery/nixery/internal/gc"
	"github.com/nixery/nixery/internal/manifest"
	"github.com/nixery/nixery/internal/metadata"
	"github.com/nixery/nixery/internal/storage"
	"github.com/nixery/nixery/internal/storage/storagetest"
)

// world is a storage with images whose ages the test decides.
type world struct {
	t     *testing.T
	ctx   context.Context
	store storage.Backend
	cat   *metadata.Store
}

func put(w *world, data string) digest.Digest {
	w.t.Helper()
	d, err := storage.Put(w.ctx, w.store, []byte(data))
	if err != nil {
		w.t.Fatal(err)
	}
	return d
}

// image stores a config, layers and both manifests for name and returns
// its entry key, manifest digest and blobs (config first).
func (w *world) image(name string, layers ...digest.Digest) (key string, md digest.Digest, blobs []digest.Digest) {
	w.t.Helper()
	cfg := put(w, "config of "+name)
	var ls []manifest.Layer
	for _, l := range layers {
		ls = append(ls, manifest.Layer{Blob: manifest.Blob{Digest: l, Size: 1}, MediaType: manifest.LayerMediaType("gzip")})
	}
	data, err := manifest.Manifest(manifest.OCIManifest, manifest.Blob{Digest: cfg, Size: 1}, ls)
	if err != nil {
		w.t.Fatal(err)
	}
	md = put(w, string(data))
	key = metadata.Key(name)
	if err := w.cat.PutEntry(w.ctx, key, metadata.Entry{Built: time.Now(), Manifests: map[string]digest.Digest{manifest.OCIManifest: md}}); err != nil {
		w.t.Fatal(err)
	}
	return key, md, append([]digest.Digest{cfg, md}, layers...)
}

// storageTime reads the storage's clock: the modification time of an
// object written now.
func (w *world) storageTime() time.Time {
	w.t.Helper()
	if err := w.store.PutObject(w.ctx, "test/clock", nil); err != nil {
		w.t.Fatal(err)
	}
	var t time.Time
	w.store.ListObjects(w.ctx, "test/", func(name string, mod time.Time) error {
		t = mod
		return nil
	})
	return t
}

// nextEpoch waits until the storage's clock has moved past its reading
// now (S3 keeps whole seconds), so that what is written next is strictly
// younger than what was written before. It waits on the storage clock
// itself, bounded, not for a guessed time.
func (w *world) nextEpoch() time.Time {
	w.t.Helper()
	before := w.storageTime()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if now := w.storageTime(); now.After(before) {
			return now
		}
		time.Sleep(50 * time.Millisecond)
	}
	w.t.Fatal("the storage's clock did not advance")
	return time.Time{}
}

// snapshot lists every blob and object with its modification time.
func (w *world) snapshot() []string {
	var out []string
	w.store.ListBlobs(w.ctx, func(d digest.Digest, size int64, mod time.Time) error {
		out = append(out, fmt.Sprintf("blob %s %d %d", d, size, mod.UnixNano()))
		return nil
	})
	w.store.ListObjects(w.ctx, "", func(name string, mod time.Time) error {
		out = append(out, fmt.Sprintf("object %s %d", name, mod.UnixNano()))
		return nil
	})
	sort.Strings(out)
	return out
}

func (w *world) exists(d digest.Digest) bool {
	w.t.Helper()
	_, err := w.store.Stat(w.ctx, d)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		w.t.Fatal(err)
	}
	return err == nil
}

// gcAt collects as if maxAge had passed since epoch: the test's clock
// hook. Everything written before epoch is old, everything after young.
func gcAt(epoch time.Time, opts gc.Options) gc.Options {
	const maxAge = time.Minute
	opts.MaxAge, opts.BlobGrace = maxAge, maxAge
	opts.Clock = func(context.Context) (time.Time, error) { return epoch.Add(maxAge), nil }
	if opts.Sleep == nil {
		opts.Sleep = func(context.Context, time.Duration) error { return nil }
	}
	return opts
}

func TestGC(t *testing.T) {
	storagetest.EachBackend(t, func(t *testing.T, newStore func() storage.Backend) {
		ctx := context.Background()
		w := &world{t: t, ctx: ctx, store: newStore()}
		w.cat = metadata.New(w.store, nil)

		shared := put(w, "layer shared by both images")
		oldKey, _, oldBlobs := w.image("old", shared, put(w, "layer only the old image has"))
		digestPulled, pulledMD, pulledBlobs := w.image("pulled by digest", put(w, "layer of an image pulled by digest"))
		if err := w.cat.PutDetails(ctx, oldKey, &metadata.Details{Name: "old"}); err != nil {
			t.Fatal(err)
		}
		if err := w.cat.PutSearchList(ctx, "an old package set", []byte("list")); err != nil {
			t.Fatal(err)
		}
		orphanLayer := metadata.Key("orphan layer")
		if err := w.cat.PutLayer(ctx, orphanLayer, archive.Layer{Digest: oldBlobs[3], Size: 1}); err != nil {
			t.Fatal(err)
		}
		epoch := w.nextEpoch()
		newKey, _, newBlobs := w.image("new", shared)
		if err := w.cat.RecordDigestUse(ctx, pulledMD); err != nil {
			t.Fatal(err)
		}

		// A dry run changes nothing at all, and says what a real run does.
		before := w.snapshot()
		dry, err := gc.Collect(ctx, w.cat, gcAt(epoch, gc.Options{DryRun: true}))
		if err != nil {
			t.Fatal(err)
		}
		if after := w.snapshot(); !slices.Equal(before, after) {
			t.Fatalf("the dry run changed storage:\nbefore %q\nafter  %q", before, after)
		}
		rep, err := gc.Collect(ctx, w.cat, gcAt(epoch, gc.Options{}))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("dry run: %s\ncollection: %s", dry, rep)
		if rep.ImagesDeleted != 2 || rep.ImagesKept != 1 {
			t.Errorf("images: %s; want 2 deleted (old, and the one pulled only by digest), 1 kept", rep)
		}
		if dry.ImagesDeleted != rep.ImagesDeleted || dry.BlobsDeleted != rep.BlobsDeleted || dry.BytesDeleted != rep.BytesDeleted || dry.ObjectsDeleted != rep.ObjectsDeleted {
			t.Errorf("dry run %s differs from the collection %s", dry, rep)
		}
		if rep.Requests == 0 {
			t.Errorf("no storage requests counted")
		}
		for _, d := range append(newBlobs, pulledBlobs...) {
			if !w.exists(d) {
				t.Errorf("blob %s of a live image was deleted", d)
			}
		}
		for _, d := range oldBlobs[:2] {
			if w.exists(d) {
				t.Errorf("blob %s of the old image was kept", d)
			}
		}
		if w.exists(oldBlobs[3]) {
			t.Errorf("the old image's own layer was kept")
		}
		if ok, _ := w.cat.EntryExists(ctx, newKey); !ok {
			t.Errorf("the new image's entry was deleted")
		}
		for _, key := range []string{oldKey, digestPulled} {
			if ok, _ := w.cat.EntryExists(ctx, key); ok {
				t.Errorf("expired entry %s kept", key)
			}
		}
		if _, err := w.cat.Details(ctx, oldKey); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("details of the old image: %v", err)
		}
		if _, err := w.cat.SearchList(ctx, "an old package set"); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("old package list: %v", err)
		}
		if _, ok, err := w.cat.Layer(ctx, orphanLayer); ok || err != nil {
			t.Errorf("layer cache entry of a deleted blob: %v, %v", ok, err)
		}
	})
}

// TestGCKeepsWhatBuildsHold: a build that takes an aged layer from the
// layer cache while the collector runs holds it in its lease; the
// collector re-reads the leases right before each deletion.
func TestGCKeepsWhatBuildsHold(t *testing.T) {
	storagetest.EachBackend(t, func(t *testing.T, newStore func() storage.Backend) {
		ctx := context.Background()
		w := &world{t: t, ctx: ctx, store: newStore()}
		w.cat = metadata.New(w.store, nil)
		aged := put(w, "an aged layer in the layer cache")
		agedKey := metadata.Key("aged layer")
		if err := w.cat.PutLayer(ctx, agedKey, archive.Layer{Digest: aged, Size: int64(len("an aged layer in the layer cache"))}); err != nil {
			t.Fatal(err)
		}
		held := put(w, "a layer held before the collection")
		epoch := w.nextEpoch()
		early := w.cat.NewLease()
		defer early.Release(ctx)
		if err := early.Hold(ctx, true, held); err != nil {
			t.Fatal(err)
		}

		var late *metadata.Lease
		opts := gcAt(epoch, gc.Options{BeforeDelete: func(d digest.Digest) {
			if d != aged || late != nil {
				return
			}
			// The collector has marked and chosen aged; now a build
			// reuses it, as builder does: lookup, then hold.
			l, ok, err := w.cat.Layer(ctx, agedKey)
			if err != nil || !ok {
				t.Errorf("layer cache lookup during gc: %v, %v", ok, err)
				return
			}
			late = w.cat.NewLease()
			if err := late.Hold(ctx, true, l.Digest); err != nil {
				t.Errorf("hold: %v", err)
			}
		}})
		if _, err := gc.Collect(ctx, w.cat, opts); err != nil {
			t.Fatal(err)
		}
		if late == nil {
			t.Fatal("the collector never chose the aged layer: the race was not exercised")
		}
		defer late.Release(ctx)
		if !w.exists(aged) {
			t.Errorf("the collector deleted a layer a build had just taken from the cache")
		}
		if !w.exists(held) {
			t.Errorf("the collector deleted a layer held by a live lease")
		}
		if _, ok, err := w.cat.Layer(ctx, agedKey); !ok || err != nil {
			t.Errorf("the reused layer's cache entry: %v, %v", ok, err)
		}
	})
}

// TestGCPullFromMemory: a replica that holds an image in memory and is
// pulled while the collector waits between deleting the entry and its
// blobs records a use; the blobs are kept and the entry is not written
// back (the next cold pull rebuilds it from the layer cache).
func TestGCPullFromMemory(t *testing.T) {
	storagetest.EachBackend(t, func(t *testing.T, newStore func() storage.Backend) {
		ctx := context.Background()
		w := &world{t: t, ctx: ctx, store: newStore()}
		w.cat = metadata.New(w.store, nil)
		key, _, blobs := w.image("held in memory", put(w, "its layer"))
		epoch := w.nextEpoch()
		slept := false
		opts := gcAt(epoch, gc.Options{Sleep: func(context.Context, time.Duration) error {
			slept = true
			if ok, _ := w.cat.EntryExists(ctx, key); ok {
				t.Errorf("the entry was not deleted before the grace period")
			}
			// The replica serves it from memory and records the pull.
			return w.cat.RecordUse(ctx, key)
		}})
		if _, err := gc.Collect(ctx, w.cat, opts); err != nil {
			t.Fatal(err)
		}
		if !slept {
			t.Fatal("the collector did not wait between entries and blobs")
		}
		for _, d := range blobs {
			if !w.exists(d) {
				t.Errorf("blob %s of an image pulled during the grace period was deleted", d)
			}
		}
		if ok, _ := w.cat.EntryExists(ctx, key); ok {
			t.Errorf("recording a use brought the deleted entry back")
		}
	})
}

// TestGCUsesTheStoragesClock: a process whose own clock is a year ahead
// collects nothing young.
func TestGCUsesTheStoragesClock(t *testing.T) {
	storagetest.EachBackend(t, func(t *testing.T, newStore func() storage.Backend) {
		ctx := context.Background()
		w := &world{t: t, ctx: ctx, store: newStore()}
		w.cat = metadata.New(w.store, nil)
		w.cat.Now = func() time.Time { return time.Now().Add(365 * 24 * time.Hour) }
		_, _, blobs := w.image("young", put(w, "young layer"))
		loose := put(w, "a young blob nothing refers to yet")
		rep, err := gc.Collect(ctx, w.cat, gc.Options{MaxAge: 2 * time.Hour, Sleep: func(context.Context, time.Duration) error { return nil }})
		if err != nil {
			t.Fatal(err)
		}
		if rep.ImagesDeleted != 0 || rep.BlobsDeleted != 0 {
			t.Errorf("a skewed local clock made the collector delete: %s", rep)
		}
		for _, d := range append(blobs, loose) {
			if !w.exists(d) {
				t.Errorf("blob %s deleted", d)
			}
		}
	})
}

// cutReads is a real store whose reads of one blob fail the way a bucket
// backend's do when the connection breaks mid-body (storage.ErrUnavailable
// wrapping io.ErrUnexpectedEOF): a fault injected at the storage
// boundary, everything else is the real backend.
type cutReads struct {
	storage.Backend
	cut digest.Digest
}

func (c *cutReads) Open(ctx context.Context, d digest.Digest) (storage.Reader, error) {
	r, err := c.Backend.Open(ctx, d)
	if err != nil || d != c.cut {
		return r, err
	}
	return cutReader{r}, nil
}

type cutReader struct{ storage.Reader }

func (cutReader) Read([]byte) (int, error) {
	return 0, fmt.Errorf("%w: read: connection reset: %w", storage.ErrUnavailable, io.ErrUnexpectedEOF)
}

// TestGCReadFailureKeepsBlobs: a manifest of a live image that cannot be
// read because the storage failed mid-read is not "not a manifest": the
// collection stops and deletes none of the image's blobs.
func TestGCReadFailureKeepsBlobs(t *testing.T) {
	storagetest.EachBackend(t, func(t *testing.T, newStore func() storage.Backend) {
		ctx := context.Background()
		real := newStore()
		w := &world{t: t, ctx: ctx, store: real}
		w.cat = metadata.New(real, nil)
		key, md, blobs := w.image("live, its manifest unreadable for a moment", put(w, "its layer"))
		epoch := w.nextEpoch()
		if err := w.cat.RecordUse(ctx, key); err != nil { // pulled since: live
			t.Fatal(err)
		}
		flaky := &cutReads{Backend: real, cut: md}
		rep, err := gc.Collect(ctx, metadata.New(flaky, nil), gcAt(epoch, gc.Options{}))
		if !errors.Is(err, storage.ErrUnavailable) {
			t.Errorf("GC with a manifest read cut off: %v (%s), want an error wrapping ErrUnavailable", err, rep)
		}
		for _, d := range blobs {
			if !w.exists(d) {
				t.Errorf("blob %s of a live image was deleted because its manifest read failed", d)
			}
		}
		if ok, _ := w.cat.EntryExists(ctx, key); !ok {
			t.Errorf("the live entry was deleted")
		}
	})
}

// stillClock is a real store whose listings report the modification time
// of a lease as it was when first listed, as a storage does whose clock
// did not tick between two writes (S3 keeps whole seconds; file systems
// stamp times from a coarse clock): rewriting a lease need not change
// its time.
type stillClock struct {
	storage.Backend
	mu    sync.Mutex
	first map[string]time.Time
}

func (s *stillClock) ListObjects(ctx context.Context, prefix string, fn func(string, time.Time) error) error {
	return s.Backend.ListObjects(ctx, prefix, func(name string, mod time.Time) error {
		if strings.HasPrefix(name, "leases/") {
			s.mu.Lock()
			if t, ok := s.first[name]; ok {
				mod = t
			} else {
				s.first[name] = mod
			}
			s.mu.Unlock()
		}
		return fn(name, mod)
	})
}

// TestGCRereadsALeaseRewrittenInOneTick: a build adds an aged layer to
// its lease after the collector last read that lease, within one tick of
// the storage's clock; the collector's re-read right before the deletion
// must see the new content although the modification time is the same.
func TestGCRereadsALeaseRewrittenInOneTick(t *testing.T) {
	storagetest.EachBackend(t, func(t *testing.T, newStore func() storage.Backend) {
		ctx := context.Background()
		real := newStore()
		w := &world{t: t, ctx: ctx, store: real}
		w.cat = metadata.New(real, nil)
		aged := put(w, "an aged layer a build is about to reuse")
		first := put(w, "the first layer the build holds")
		epoch := w.nextEpoch()
		lease := w.cat.NewLease()
		defer lease.Release(ctx)
		if err := lease.Hold(ctx, true, first); err != nil {
			t.Fatal(err)
		}
		store := &stillClock{Backend: real, first: map[string]time.Time{}}
		held := false
		opts := gcAt(epoch, gc.Options{BeforeDelete: func(d digest.Digest) {
			if d != aged || held {
				return
			}
			// The collector has read the lease and chosen aged; now
			// the build takes it (lookup, then hold), in the same tick.
			held = true
			if err := lease.Hold(ctx, true, aged); err != nil {
				t.Errorf("hold: %v", err)
			}
		}})
		if _, err := gc.Collect(ctx, metadata.New(store, nil), opts); err != nil {
			t.Fatal(err)
		}
		if !held {
			t.Fatal("the collector never chose the aged layer: the race was not exercised")
		}
		if !w.exists(aged) {
			t.Errorf("the collector deleted a layer a build held: it used the lease as read before, its time being unchanged")
		}
		if !w.exists(first) {
			t.Errorf("the collector deleted a layer held since before the collection")
		}
	})
}

// TestHugeObjectsAreUnreadable: a cache entry or layer cache entry over
// storage.MaxObjectSize (written by something other than Nixery, which
// cannot write one) reads as unreadable, like one that is not JSON: the
// server rebuilds it and the collector goes on, without reading it into
// memory. The mapping is the metadata store's, so one backend shows it; the
// storage suite checks the bound on every backend.
func TestHugeObjectsAreUnreadable(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	store, err := storage.NewFilesystem(root)
	if err != nil {
		t.Fatal(err)
	}
	cat := metadata.New(store, nil)
	entryKey, layerKey := metadata.Key("huge entry"), metadata.Key("huge layer")
	huge := make([]byte, storage.MaxObjectSize+1)
	for _, name := range []string{"manifests/" + entryKey, "layers/" + layerKey} {
		p := filepath.Join(root, "objects", filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, huge, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cat.Entry(ctx, entryKey); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Entry of a huge object: %v, want ErrNotFound", err)
	}
	if _, ok, err := cat.Layer(ctx, layerKey); ok || err != nil {
		t.Errorf("Layer of a huge object: %v, %v; want a miss", ok, err)
	}
	w := &world{t: t, ctx: ctx, store: store, cat: cat}
	gone := put(w, "a blob nothing refers to")
	epoch := w.nextEpoch()
	rep, err := gc.Collect(ctx, cat, gcAt(epoch, gc.Options{}))
	if err != nil {
		t.Fatalf("GC with huge objects in storage: %v", err)
	}
	if w.exists(gone) || rep.ImagesDeleted != 1 {
		t.Errorf("GC: %s; want the huge entry and the loose blob deleted", rep)
	}
	if ok, _ := cat.EntryExists(ctx, entryKey); ok {
		t.Errorf("the huge entry was kept")
	}
}

// TestGCStopsAtADamagedLease: a live lease that cannot be read names
// blobs nobody can know; the collection stops instead of sweeping them.
func TestGCStopsAtADamagedLease(t *testing.T) {
	storagetest.EachBackend(t, func(t *testing.T, newStore func() storage.Backend) {
		ctx := context.Background()
		w := &world{t: t, ctx: ctx, store: newStore()}
		w.cat = metadata.New(w.store, nil)
		aged := put(w, "an aged layer, perhaps held by the damaged lease")
		epoch := w.nextEpoch()
		if err := w.store.PutObject(ctx, "leases/"+strings.Repeat("ab", 16), []byte(`["sha256:`)); err != nil {
			t.Fatal(err)
		}
		rep, err := gc.Collect(ctx, w.cat, gcAt(epoch, gc.Options{}))
		if err == nil {
			t.Errorf("GC with a damaged live lease succeeded: %s", rep)
		}
		if !w.exists(aged) {
			t.Errorf("GC swept a blob while a live lease was unreadable")
		}
	})
}

// artifact stores an artifact manifest whose subject is md, with one
// layer, and returns its digest and blobs (the manifest first).
func (w *world) artifact(md digest.Digest, what string) (digest.Digest, []digest.Digest) {
	w.t.Helper()
	empty := put(w, "{}")
	layer := put(w, what)
	data := fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"artifactType":"application/example","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":%q,"size":2},"layers":[{"mediaType":"application/example","digest":%q,"size":%d}],"subject":{"mediaType":%q,"digest":%q,"size":1}}`,
		manifest.OCIManifest, empty, layer, len(what), manifest.OCIManifest, md)
	ad := put(w, data)
	return ad, []digest.Digest{ad, layer}
}

// An image's artifacts (its referrers set, the manifests it names and
// their blobs) are kept exactly as long as the image: an artifact pulled
// by digest does not keep itself, and never keeps its image.
func TestGCArtifactsLiveAsLongAsTheirImage(t *testing.T) {
	storagetest.EachBackend(t, func(t *testing.T, newStore func() storage.Backend) {
		ctx := context.Background()
		w := &world{t: t, ctx: ctx, store: newStore()}
		w.cat = metadata.New(w.store, nil)

		_, oldMD, oldBlobs := w.image("old", put(w, "old layer"))
		oldSBOM, oldArtifact := w.artifact(oldMD, "SBOM of the old image")
		oldSig, oldSigBlobs := w.artifact(oldMD, "signature of the old image") // cosign v2's .sig: by tag
		if _, err := w.cat.CreateReferrers(ctx, oldMD, metadata.Unsigned, metadata.Referrers{
			Manifests: []v1.Descriptor{{MediaType: manifest.OCIManifest, Digest: oldSBOM, ArtifactType: "application/example"}},
			Tags:      map[string]digest.Digest{"sha256-" + oldMD.Encoded() + ".sig": oldSig},
		}); err != nil {
			t.Fatal(err)
		}
		// Pulled by digest, as cosign does: recorded only if it were an
		// image (the registry asks manifest.IsImage); a record made by
		// hand must not keep the image either.
		if err := w.cat.RecordDigestUse(ctx, oldSBOM); err != nil {
			t.Fatal(err)
		}
		w.nextEpoch()
		newKey, newMD, newBlobs := w.image("new", put(w, "new layer"))
		newSBOM, newArtifact := w.artifact(newMD, "SBOM of the new image")
		if _, err := w.cat.CreateReferrers(ctx, newMD, "0123abcd", metadata.Referrers{
			Manifests: []v1.Descriptor{{MediaType: manifest.OCIManifest, Digest: newSBOM, ArtifactType: "application/example"}},
		}); err != nil {
			t.Fatal(err)
		}
		// The collection runs a blob grace later, so that the new image's
		// artifacts are old enough to go, were nothing to keep them; the
		// new image was pulled since.
		later := w.nextEpoch()
		if err := w.cat.RecordUse(ctx, newKey); err != nil {
			t.Fatal(err)
		}
		rep, err := gc.Collect(ctx, w.cat, gcAt(later, gc.Options{}))
		if err != nil {
			t.Fatal(err)
		}
		t.Log(rep)
		for _, d := range append(newBlobs, newArtifact...) {
			if !w.exists(d) {
				t.Errorf("blob %s of the live image or its artifact was deleted", d)
			}
		}
		if _, err := w.cat.Referrers(ctx, newMD, "0123abcd"); err != nil {
			t.Errorf("the live image's referrers: %v", err)
		}
		for _, d := range slices.Concat(oldBlobs[:2], oldArtifact, oldSigBlobs) {
			if w.exists(d) {
				t.Errorf("blob %s of the collected image or its artifacts was kept", d)
			}
		}
		if _, err := w.cat.Referrers(ctx, oldMD, metadata.Unsigned); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("the collected image's referrers: %v, want gone", err)
		}
	})
}

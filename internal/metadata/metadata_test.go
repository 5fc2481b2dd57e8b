package metadata_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/nixery/nixery/internal/manifest"
	"github.com/nixery/nixery/internal/metadata"
	"github.com/nixery/nixery/internal/storage"
)

// countPuts counts object writes.
type countPuts struct {
	storage.Backend
	puts atomic.Int64
}

func (c *countPuts) PutObject(ctx context.Context, name string, data []byte) error {
	c.puts.Add(1)
	return c.Backend.PutObject(ctx, name, data)
}

// A pull by digest is recorded once per UseInterval, and keeps the image
// (TestGC: "pulled by digest").
func TestRecordDigestPullThrottled(t *testing.T) {
	fs, err := storage.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	store := &countPuts{Backend: fs}
	cat := metadata.New(store, nil)
	now := time.Now()
	cat.Now = func() time.Time { return now }
	d := digest.FromString("a manifest")
	for range 100 {
		cat.RecordDigestPull(context.Background(), d)
	}
	if n := store.puts.Load(); n != 1 {
		t.Errorf("100 pulls wrote %d use records, want 1", n)
	}
	now = now.Add(metadata.UseInterval)
	cat.RecordDigestPull(context.Background(), d)
	if n := store.puts.Load(); n != 2 {
		t.Errorf("a pull an interval later: %d writes in all, want 2", n)
	}
}

// slowPuts is a real store whose object writes take a while, as a
// bucket's round trip does; it counts them.
type slowPuts struct {
	storage.Backend
	puts atomic.Int64
}

func (s *slowPuts) PutObject(ctx context.Context, name string, data []byte) error {
	s.puts.Add(1)
	time.Sleep(20 * time.Millisecond) // a bucket's latency, not a synchronisation
	return s.Backend.PutObject(ctx, name, data)
}

// Holds that arrive while the lease is being written share the next
// write; every one of them is in the lease when Hold returns.
func TestLeaseGroupCommit(t *testing.T) {
	fs, err := storage.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	store := &slowPuts{Backend: fs}
	cat := metadata.New(store, nil)
	lease := cat.NewLease()
	defer lease.Release(context.Background())
	var wg sync.WaitGroup
	const n = 16
	digests := make([]digest.Digest, n)
	for i := range n {
		digests[i] = digest.FromString(fmt.Sprint("layer ", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := lease.Hold(context.Background(), false, digests[i]); err != nil {
				t.Error(err)
			}
			// What Hold promised is stored now.
			raw, err := fs.GetObject(context.Background(), leaseName(t, fs))
			if err != nil || !strings.Contains(string(raw), digests[i].String()) {
				t.Errorf("after Hold of %s the lease holds %s (%v)", digests[i], raw, err)
			}
		}()
	}
	wg.Wait()
	if p := store.puts.Load(); p >= n/2 {
		t.Errorf("%d holds at once took %d writes; they should share writes", n, p)
	}
}

// leaseName finds the one lease object in store.
func leaseName(t *testing.T, store storage.Backend) string {
	t.Helper()
	var name string
	store.ListObjects(context.Background(), "leases/", func(n string, _ time.Time) error {
		name = n
		return nil
	})
	return name
}

// Abandoned uploads are judged on the storage's clock: a server whose own
// clock runs two days ahead removes an upload untouched for longer than
// storage.AbandonedAfter, not a replica's upload in progress.
func TestAbandonedUploadsOnTheStoragesClock(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	store, err := storage.NewFilesystem(root)
	if err != nil {
		t.Fatal(err)
	}
	abandoned, _ := store.Create(ctx)
	abandoned.Write([]byte("its process died"))
	then := time.Now().Add(-storage.AbandonedAfter - time.Hour)
	tmp, _ := os.ReadDir(filepath.Join(root, "tmp"))
	if len(tmp) != 1 {
		t.Fatalf("%d temporary files, want 1", len(tmp))
	}
	if err := os.Chtimes(filepath.Join(root, "tmp", tmp[0].Name()), then, then); err != nil {
		t.Fatal(err)
	}
	live, _ := store.Create(ctx)
	live.Write([]byte("in progress elsewhere"))

	c := metadata.New(store, nil)
	c.Now = func() time.Time { return time.Now().Add(48 * time.Hour) }
	if n, err := c.DeleteAbandonedUploads(ctx); n != 1 || err != nil {
		t.Fatalf("DeleteAbandonedUploads = %d, %v; want 1", n, err)
	}
	if err := live.Commit(digest.FromString("in progress elsewhere")); err != nil {
		t.Errorf("the upload in progress: %v", err)
	}
	if err := abandoned.Commit(digest.FromString("its process died")); err == nil {
		t.Error("the abandoned upload was committed")
	}
}

// The collector lists and deletes objects by kind and key: every key
// List reports, Delete takes back, and a digest use's key is its digest.
func TestKindsListAndDelete(t *testing.T) {
	ctx := context.Background()
	store, err := storage.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cat := metadata.New(store, nil)
	key, d := metadata.Key("an image"), digest.FromString("a manifest")
	if err := cat.RecordUse(ctx, key); err != nil {
		t.Fatal(err)
	}
	if err := cat.RecordDigestUse(ctx, d); err != nil {
		t.Fatal(err)
	}
	for kind, want := range map[metadata.Kind]string{metadata.KindImageUse: key, metadata.KindDigestUse: d.String()} {
		got, err := cat.List(ctx, kind)
		if _, ok := got[want]; !ok || len(got) != 1 || err != nil {
			t.Errorf("List(%s) = %v, %v; want the one key %s", kind, got, err, want)
		}
		if err := cat.Delete(ctx, kind, want); err != nil {
			t.Fatal(err)
		}
		if got, err := cat.List(ctx, kind); len(got) != 0 || err != nil {
			t.Errorf("after Delete, List(%s) = %v, %v", kind, got, err)
		}
	}
	var names []string
	store.ListObjects(ctx, "", func(name string, _ time.Time) error {
		names = append(names, name)
		return nil
	})
	if len(names) != 0 {
		t.Errorf("objects left: %q", names)
	}
}

// cutOpen is a real store whose reads of blobs fail as a bucket's do
// when the connection breaks mid-body.
type cutOpen struct{ storage.Backend }

func (c cutOpen) Open(ctx context.Context, d digest.Digest) (storage.Reader, error) {
	r, err := c.Backend.Open(ctx, d)
	return cutReader{r}, err
}

type cutReader struct{ storage.Reader }

func (cutReader) Read([]byte) (int, error) {
	return 0, fmt.Errorf("%w: read: connection reset: %w", storage.ErrUnavailable, io.ErrUnexpectedEOF)
}

// ReadManifest tells a manifest, a blob that is none, a blob that is
// absent and a storage that fails apart.
func TestReadManifest(t *testing.T) {
	ctx := context.Background()
	store, err := storage.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m := []byte(`{"schemaVersion":2,"config":{},"layers":[]}`)
	md, err := storage.Put(ctx, store, m)
	if err != nil {
		t.Fatal(err)
	}
	layer, err := storage.Put(ctx, store, []byte("\x1f\x8b\x08 a layer"))
	if err != nil {
		t.Fatal(err)
	}
	if data, err := metadata.ReadManifest(ctx, store, md); err != nil || string(data) != string(m) {
		t.Errorf("a manifest: %q, %v", data, err)
	}
	if _, err := metadata.ReadManifest(ctx, store, layer); !errors.Is(err, storage.ErrNotFound) || !errors.Is(err, manifest.ErrNotManifest) {
		t.Errorf("a layer: %v, want ErrNotFound and ErrNotManifest", err)
	}
	if _, err := metadata.ReadManifest(ctx, store, digest.FromString("absent")); !errors.Is(err, storage.ErrNotFound) || errors.Is(err, manifest.ErrNotManifest) {
		t.Errorf("an absent blob: %v, want ErrNotFound only", err)
	}
	if _, err := metadata.New(cutOpen{store}, nil).ReadManifest(ctx, md); !errors.Is(err, storage.ErrUnavailable) || errors.Is(err, storage.ErrNotFound) {
		t.Errorf("a read the storage cut off: %v, want ErrUnavailable and not ErrNotFound", err)
	}
}

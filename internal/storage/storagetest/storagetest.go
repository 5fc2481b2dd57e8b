// Package storagetest is the test suite every storage backend must pass,
// and the real storage servers (an S3-compatible one and a GCS emulator)
// that tests start on 127.0.0.1.
package storagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/nixery/nixery/internal/storage"
	"github.com/opencontainers/go-digest"
)

// LargeSize is the size of the "large" blobs of the suite: above the part
// size backends are configured with in tests (5 MiB, S3's minimum), so
// large blobs take the streamed path with more than one part.
const LargeSize = 11<<20 + 12345

// Data returns n bytes of reproducible pseudo-random content.
func Data(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// Run runs the suite. newBackend must return a new, empty backend for
// each call (a fresh directory, or a fresh prefix in a bucket).
func Run(t *testing.T, newBackend func(t *testing.T) storage.Backend) {
	ctx := context.Background()
	large := Data(1, LargeSize)

	t.Run("PutGetStatSeek", func(t *testing.T) {
		b := newBackend(t)
		d, err := storage.Put(ctx, b, []byte("hello blob"))
		if err != nil {
			t.Fatal(err)
		}
		if d != digest.FromString("hello blob") {
			t.Fatalf("digest = %s", d)
		}
		if size, err := b.Stat(ctx, d); err != nil || size != 10 {
			t.Fatalf("Stat = %d, %v", size, err)
		}
		if got, err := storage.Get(ctx, b, d); err != nil || string(got) != "hello blob" {
			t.Fatalf("Get = %q, %v", got, err)
		}
		r, err := b.Open(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if r.Size() != 10 {
			t.Fatalf("Size = %d", r.Size())
		}
		if _, err := r.Seek(6, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		if rest, err := io.ReadAll(r); err != nil || string(rest) != "blob" {
			t.Fatalf("after Seek(6): %q, %v", rest, err)
		}
		r.Seek(0, io.SeekStart)
		if all, err := io.ReadAll(r); err != nil || string(all) != "hello blob" {
			t.Fatalf("after Seek(0): %q, %v", all, err)
		}
	})

	t.Run("Empty", func(t *testing.T) {
		b := newBackend(t)
		d, err := storage.Put(ctx, b, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := storage.Get(ctx, b, d); err != nil || len(got) != 0 {
			t.Fatalf("Get = %q, %v", got, err)
		}
	})

	t.Run("Large", func(t *testing.T) {
		b := newBackend(t)
		d := writeInChunks(t, b, large)
		if size, err := b.Stat(ctx, d); err != nil || size != int64(len(large)) {
			t.Fatalf("Stat = %d, %v", size, err)
		}
		if got, err := storage.Get(ctx, b, d); err != nil || !bytes.Equal(got, large) {
			t.Fatalf("Get: %d bytes, %v", len(got), err)
		}
		// Range requests as the registry serves them.
		r, err := b.Open(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		for _, rng := range [][2]int{{0, 9}, {6 << 20, 6<<20 + 99}, {len(large) - 5, len(large) - 1}, {3, 3}} {
			req := httptest.NewRequest("GET", "/blob", nil)
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", rng[0], rng[1]))
			rec := httptest.NewRecorder()
			http.ServeContent(rec, req, "", time.Time{}, r)
			if rec.Code != http.StatusPartialContent || !bytes.Equal(rec.Body.Bytes(), large[rng[0]:rng[1]+1]) {
				t.Fatalf("Range %v: status %d, %d bytes", rng, rec.Code, rec.Body.Len())
			}
		}
		rec := httptest.NewRecorder()
		http.ServeContent(rec, httptest.NewRequest("GET", "/blob", nil), "", time.Time{}, r)
		if rec.Code != 200 || !bytes.Equal(rec.Body.Bytes(), large) {
			t.Fatalf("whole blob: status %d, %d bytes", rec.Code, rec.Body.Len())
		}
	})

	for _, tc := range []struct {
		name string
		data []byte
	}{{"small", []byte("other")}, {"large", large}} {
		t.Run("WrongDigestLeavesNothing/"+tc.name, func(t *testing.T) {
			b := newBackend(t)
			w, err := b.Create(ctx)
			if err != nil {
				t.Fatal(err)
			}
			writeAll(t, w, tc.data)
			wrong := digest.FromString("not the content")
			if err := w.Commit(wrong); err == nil {
				t.Fatal("Commit with a wrong digest succeeded")
			}
			for _, d := range []digest.Digest{wrong, digest.FromBytes(tc.data)} {
				if _, err := b.Stat(ctx, d); !errors.Is(err, storage.ErrNotFound) {
					t.Fatalf("Stat(%s) after failed commit: %v", d, err)
				}
			}
			expectEmpty(t, b)
		})
		t.Run("CancelLeavesNothing/"+tc.name, func(t *testing.T) {
			b := newBackend(t)
			w, err := b.Create(ctx)
			if err != nil {
				t.Fatal(err)
			}
			writeAll(t, w, tc.data)
			if err := w.Cancel(); err != nil {
				t.Fatal(err)
			}
			if err := w.Commit(digest.FromBytes(tc.data)); err == nil {
				t.Fatal("Commit after Cancel succeeded")
			}
			if _, err := b.Stat(ctx, digest.FromBytes(tc.data)); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("Stat after cancel: %v", err)
			}
			expectEmpty(t, b)
		})
	}

	t.Run("ExistingBlobSkipped", func(t *testing.T) {
		b := newBackend(t)
		d1 := writeInChunks(t, b, large)
		d2 := writeInChunks(t, b, large)
		if d1 != d2 {
			t.Fatal("digests differ")
		}
		if _, err := storage.Put(ctx, b, []byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := storage.Put(ctx, b, []byte("x")); err != nil {
			t.Fatal(err)
		}
		if got, err := storage.Get(ctx, b, d1); err != nil || !bytes.Equal(got, large) {
			t.Fatalf("Get: %d bytes, %v", len(got), err)
		}
		expectEmpty(t, b)
	})

	t.Run("CommitTwice", func(t *testing.T) {
		b := newBackend(t)
		w, _ := b.Create(ctx)
		writeAll(t, w, []byte("once"))
		if err := w.Commit(digest.FromString("once")); err != nil {
			t.Fatal(err)
		}
		if err := w.Commit(digest.FromString("once")); err == nil {
			t.Fatal("second Commit succeeded")
		}
		if _, err := w.Write([]byte("more")); err == nil {
			t.Fatal("Write after Commit succeeded")
		}
		if err := w.Cancel(); err != nil {
			t.Fatalf("Cancel after Commit: %v", err)
		}
		if got, err := storage.Get(ctx, b, digest.FromString("once")); err != nil || string(got) != "once" {
			t.Fatalf("Get = %q, %v", got, err)
		}
	})

	t.Run("NotFoundAndInvalid", func(t *testing.T) {
		b := newBackend(t)
		absent := digest.FromString("absent")
		if _, err := b.Open(ctx, absent); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("Open absent: %v", err)
		}
		if _, err := b.Stat(ctx, absent); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("Stat absent: %v", err)
		}
		for _, bad := range []digest.Digest{"sha256:../../etc/passwd", "md5:abc", "", digest.Digest("sha512:" + string(bytes.Repeat([]byte("a"), 128)))} {
			if _, err := b.Open(ctx, bad); err == nil || errors.Is(err, storage.ErrNotFound) {
				t.Errorf("Open(%q): %v", bad, err)
			}
			if _, err := b.Stat(ctx, bad); err == nil || errors.Is(err, storage.ErrNotFound) {
				t.Errorf("Stat(%q): %v", bad, err)
			}
			w, _ := b.Create(ctx)
			if err := w.Commit(bad); err == nil {
				t.Errorf("Commit(%q) accepted", bad)
			}
		}
		if _, err := b.GetObject(ctx, "manifests/absent"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("GetObject absent: %v", err)
		}
	})

	t.Run("Objects", func(t *testing.T) {
		b := newBackend(t)
		for _, content := range []string{"one", "two", ""} {
			if err := b.PutObject(ctx, "manifests/abc", []byte(content)); err != nil {
				t.Fatal(err)
			}
			if got, err := b.GetObject(ctx, "manifests/abc"); err != nil || string(got) != content {
				t.Fatalf("GetObject = %q, %v; want %q", got, err, content)
			}
		}
		for _, bad := range []string{"../x", "/etc/passwd", "a/../../b", ".hidden", "A", "a//b", "", "a/"} {
			if err := b.PutObject(ctx, bad, []byte("x")); err == nil {
				t.Errorf("PutObject(%q) accepted", bad)
			}
			if _, err := b.GetObject(ctx, bad); err == nil || errors.Is(err, storage.ErrNotFound) {
				t.Errorf("GetObject(%q): %v", bad, err)
			}
		}
	})

	t.Run("ListAndDelete", func(t *testing.T) {
		b := newBackend(t)
		start := time.Now().Add(-time.Minute)
		d1, _ := storage.Put(ctx, b, []byte("blob one"))
		d2, _ := storage.Put(ctx, b, []byte("blob two!"))
		for _, name := range []string{"manifests/x", "manifests/y/z", "other/w"} {
			if err := b.PutObject(ctx, name, []byte(name)); err != nil {
				t.Fatal(err)
			}
		}
		blobs := map[digest.Digest]int64{}
		err := b.ListBlobs(ctx, func(d digest.Digest, size int64, mod time.Time) error {
			if mod.Before(start) || mod.After(time.Now().Add(time.Minute)) {
				t.Errorf("blob %s: modTime %s", d, mod)
			}
			blobs[d] = size
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(blobs) != 2 || blobs[d1] != 8 || blobs[d2] != 9 {
			t.Fatalf("ListBlobs = %v", blobs)
		}
		if got := listObjects(t, b, "manifests/"); fmt.Sprint(got) != "[manifests/x manifests/y/z]" {
			t.Fatalf("ListObjects(manifests/) = %v", got)
		}
		if got := listObjects(t, b, ""); len(got) != 3 {
			t.Fatalf("ListObjects() = %v", got)
		}
		stop := errors.New("stop")
		if err := b.ListBlobs(ctx, func(digest.Digest, int64, time.Time) error { return stop }); err != stop {
			t.Fatalf("ListBlobs did not return fn's error: %v", err)
		}
		for range 2 { // deleting twice is fine
			if err := b.DeleteBlob(ctx, d1); err != nil {
				t.Fatal(err)
			}
			if err := b.DeleteObject(ctx, "manifests/x"); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := b.Stat(ctx, d1); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("Stat deleted blob: %v", err)
		}
		if _, err := b.GetObject(ctx, "manifests/x"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("GetObject deleted object: %v", err)
		}
		if _, err := b.Stat(ctx, d2); err != nil {
			t.Fatalf("other blob: %v", err)
		}
		if got := listObjects(t, b, ""); fmt.Sprint(got) != "[manifests/y/z other/w]" {
			t.Fatalf("ListObjects after delete = %v", got)
		}
		if err := b.DeleteObject(ctx, "../x"); err == nil {
			t.Fatal("DeleteObject accepted an invalid name")
		}
	})

	t.Run("CreateObjectOnce", func(t *testing.T) {
		b := newBackend(t)
		// Eight replicas race for one lease: exactly one creates it.
		var wg sync.WaitGroup
		results := make([]error, 8)
		for i := range results {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i] = b.CreateObject(ctx, "leases/race", []byte(fmt.Sprint("holder ", i)))
			}()
		}
		wg.Wait()
		winner := -1
		for i, err := range results {
			switch {
			case err == nil && winner >= 0:
				t.Errorf("both %d and %d created the object", winner, i)
			case err == nil:
				winner = i
			case !errors.Is(err, storage.ErrExists):
				t.Errorf("CreateObject %d: %v, want ErrExists", i, err)
			}
		}
		if winner < 0 {
			t.Fatal("nobody created the object")
		}
		got, err := b.GetObject(ctx, "leases/race")
		if err != nil || string(got) != fmt.Sprint("holder ", winner) {
			t.Errorf("object = %q, %v; want the winner's", got, err)
		}
		if err := b.CreateObject(ctx, "leases/race", []byte("late")); !errors.Is(err, storage.ErrExists) {
			t.Errorf("CreateObject over an existing object: %v", err)
		}
		// PutObject still replaces it, and a deleted one can be created again.
		if err := b.PutObject(ctx, "leases/race", []byte("renewed")); err != nil {
			t.Fatal(err)
		}
		if err := b.DeleteObject(ctx, "leases/race"); err != nil {
			t.Fatal(err)
		}
		if err := b.CreateObject(ctx, "leases/race", []byte("again")); err != nil {
			t.Errorf("CreateObject after a delete: %v", err)
		}
		if err := b.CreateObject(ctx, "../escape", []byte("x")); err == nil {
			t.Error("CreateObject accepted an invalid name")
		}
	})

	t.Run("ConcurrentWriters", func(t *testing.T) {
		b := newBackend(t)
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				data := []byte("small and shared")
				if i%2 == 0 {
					data = large
				}
				w, err := b.Create(ctx)
				if err != nil {
					errs <- err
					return
				}
				for p := data; len(p) > 0; {
					n := min(len(p), 1<<20)
					if _, err := w.Write(p[:n]); err != nil {
						w.Cancel()
						errs <- err
						return
					}
					p = p[n:]
				}
				errs <- w.Commit(digest.FromBytes(data))
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
		if got, err := storage.Get(ctx, b, digest.FromBytes(large)); err != nil || !bytes.Equal(got, large) {
			t.Fatalf("Get large: %d bytes, %v", len(got), err)
		}
		if got, err := storage.Get(ctx, b, digest.FromString("small and shared")); err != nil || string(got) != "small and shared" {
			t.Fatalf("Get small: %q, %v", got, err)
		}
		expectEmpty(t, b)
	})
}

// writeInChunks writes data through a Writer in uneven pieces, as the
// archive stage does, and commits it.
func writeInChunks(t *testing.T, b storage.Backend, data []byte) digest.Digest {
	t.Helper()
	w, err := b.Create(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	writeAll(t, w, data)
	d := digest.FromBytes(data)
	if err := w.Commit(d); err != nil {
		t.Fatal(err)
	}
	return d
}

func writeAll(t *testing.T, w io.Writer, data []byte) {
	t.Helper()
	for i, p := 0, data; len(p) > 0; i++ {
		n := min(len(p), 1000+i*7919%(300<<10))
		if _, err := w.Write(p[:n]); err != nil {
			t.Fatal(err)
		}
		p = p[n:]
	}
}

func listObjects(t *testing.T, b storage.Backend, prefix string) []string {
	t.Helper()
	var names []string
	err := b.ListObjects(context.Background(), prefix, func(name string, _ time.Time) error {
		names = append(names, name)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(names)
	return names
}

// expectEmpty checks that no temporary upload is left behind.
func expectEmpty(t *testing.T, b storage.Backend) {
	t.Helper()
	n, err := b.DeleteTemporaries(context.Background(), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("%d temporary uploads left behind", n)
	}
}

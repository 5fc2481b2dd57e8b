package storagetest

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nixery/nixery/internal/storage"
	"github.com/opencontainers/go-digest"
)

// FailFast is how long any call may take while the server is down (the
// backends' retries are bounded to about a second or two).
const FailFast = 8 * time.Second

// RunOutage stops srv in the middle of work done through b (a backend on
// srv), checks that every operation fails fast with storage.ErrUnavailable
// and that nothing partial becomes visible, then restarts srv on the same
// port and checks that b works again by itself.
func RunOutage(t *testing.T, srv *Server, b storage.Backend) {
	ctx := context.Background()
	before, err := storage.Put(ctx, b, []byte("stored before the outage"))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.PutObject(ctx, "manifests/before", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	large := Data(7, LargeSize)
	largeDigest := digest.FromBytes(large)

	// A large upload is under way (its first part sent) when the server
	// goes away.
	w, err := b.Create(ctx)
	if err != nil {
		t.Fatal(err)
	}
	half := 6 << 20
	if _, err := w.Write(large[:half]); err != nil {
		t.Fatal(err)
	}
	srv.Stop()

	failsFast := func(what string, call func() error) {
		t.Helper()
		start := time.Now()
		err := call()
		took := time.Since(start)
		if !errors.Is(err, storage.ErrUnavailable) {
			t.Errorf("%s during outage: %v, want ErrUnavailable", what, err)
		}
		if took > FailFast {
			t.Errorf("%s during outage took %s", what, took)
		}
		t.Logf("%s: failed in %s: %v", what, took.Round(time.Millisecond), err)
	}
	failsFast("finishing the upload", func() error {
		if _, err := w.Write(large[half:]); err != nil {
			w.Cancel()
			return err
		}
		return w.Commit(largeDigest)
	})
	failsFast("Stat", func() error { _, err := b.Stat(ctx, before); return err })
	failsFast("Open", func() error {
		r, err := b.Open(ctx, before)
		if err == nil {
			r.Close()
		}
		return err
	})
	failsFast("Put", func() error { _, err := storage.Put(ctx, b, []byte("during")); return err })
	failsFast("Put large", func() error {
		w, err := b.Create(ctx)
		if err != nil {
			return err
		}
		defer w.Cancel()
		for p := Data(8, LargeSize); len(p) > 0; {
			n := min(len(p), 1<<20)
			if _, err := w.Write(p[:n]); err != nil {
				return err
			}
			p = p[n:]
		}
		return w.Commit(digest.FromBytes(Data(8, LargeSize)))
	})
	failsFast("GetObject", func() error { _, err := b.GetObject(ctx, "manifests/before"); return err })
	failsFast("PutObject", func() error { return b.PutObject(ctx, "manifests/before", []byte("v2")) })
	failsFast("ListBlobs", func() error {
		return b.ListBlobs(ctx, func(digest.Digest, int64, time.Time) error { return nil })
	})

	srv.Start()

	// Nothing partial: the interrupted blob and the writes refused during
	// the outage are absent; what was there before is intact.
	if _, err := b.Stat(ctx, largeDigest); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("interrupted upload after restart: %v, want ErrNotFound", err)
	}
	if _, err := b.Stat(ctx, digest.FromString("during")); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("blob refused during outage after restart: %v, want ErrNotFound", err)
	}
	if got, err := storage.Get(ctx, b, before); err != nil || string(got) != "stored before the outage" {
		t.Fatalf("Get after restart = %q, %v", got, err)
	}
	if got, err := b.GetObject(ctx, "manifests/before"); err != nil || string(got) != "v1" {
		t.Fatalf("GetObject after restart = %q, %v", got, err)
	}
	// Service resumes: the same writes succeed now.
	w, err = b.Create(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(large); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(largeDigest); err != nil {
		t.Fatalf("upload after restart: %v", err)
	}
	if got, err := storage.Get(ctx, b, largeDigest); err != nil || !bytes.Equal(got, large) {
		t.Fatalf("Get after restart: %d bytes, %v", len(got), err)
	}
	if err := b.PutObject(ctx, "manifests/before", []byte("v2")); err != nil {
		t.Fatal(err)
	}
	// An upload abandoned during the outage may remain as a temporary
	// (its abort could not reach the server); garbage collection removes it.
	n, err := b.DeleteTemporaries(ctx, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("temporaries removed after the outage: %d", n)
	expectEmpty(t, b)
}

// RunHang freezes srv (it accepts connections but never answers) and checks
// that calls through b, a backend on srv configured with timeouts of about
// a second, fail with storage.ErrUnavailable instead of waiting, and that
// b works again once srv answers.
func RunHang(t *testing.T, srv *Server, b storage.Backend) {
	ctx := context.Background()
	d, err := storage.Put(ctx, b, []byte("stored before the hang"))
	if err != nil {
		t.Fatal(err)
	}
	large := Data(9, LargeSize)
	w, err := b.Create(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(large[:6<<20]); err != nil {
		t.Fatal(err)
	}
	srv.Pause()
	resumed := false
	defer func() {
		if !resumed {
			srv.Resume()
		}
	}()
	for _, c := range []struct {
		what string
		call func() error
	}{
		{"finishing an upload", func() error {
			defer w.Cancel()
			if _, err := w.Write(large[6<<20:]); err != nil {
				return err
			}
			return w.Commit(digest.FromBytes(large))
		}},
		{"Stat", func() error { _, err := b.Stat(ctx, d); return err }},
		{"Open", func() error {
			r, err := b.Open(ctx, d)
			if err == nil {
				r.Close()
			}
			return err
		}},
		{"GetObject", func() error { _, err := b.GetObject(ctx, "manifests/x"); return err }},
		{"PutObject", func() error { return b.PutObject(ctx, "manifests/x", []byte("x")) }},
	} {
		start := time.Now()
		err := c.call()
		took := time.Since(start)
		if !errors.Is(err, storage.ErrUnavailable) {
			t.Errorf("%s while the server hangs: %v, want ErrUnavailable", c.what, err)
		}
		if took > FailFast {
			t.Errorf("%s while the server hangs took %s", c.what, took)
		}
		t.Logf("%s: failed in %s: %v", c.what, took.Round(time.Millisecond), err)
	}
	srv.Resume()
	resumed = true
	if got, err := storage.Get(ctx, b, d); err != nil || string(got) != "stored before the hang" {
		t.Fatalf("Get after the hang = %q, %v", got, err)
	}
	if err := b.PutObject(ctx, "manifests/x", []byte("y")); err != nil {
		t.Fatalf("PutObject after the hang: %v", err)
	}
	if _, err := b.Stat(ctx, digest.FromBytes(large)); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("upload interrupted by the hang: %v, want ErrNotFound", err)
	}
}

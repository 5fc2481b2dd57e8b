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

// Shared is one storage seen by two processes: a backend on a new, empty
// storage, and a way to open another backend on the same storage, as a
// second process (a replica, `nixery gc`, `nixery build --local`) does.
type Shared struct {
	Backend storage.Backend
	// Open opens another backend on Backend's storage.
	Open func() storage.Backend
	// Abandon, if set, leaves in the storage what a process that died in
	// the middle of a large upload leaves there, for backends where a
	// Writer stopped halfway leaves nothing that another process can see
	// (GCS: an unfinished resumable upload is no object). Nil: the suite
	// stops a Writer of Backend halfway, as a crash would.
	Abandon func(t *testing.T)
}

// RunTemporaries checks the rule for temporary uploads (see
// storage.AbandonedAfter): opening a backend changes nothing, a live
// upload of another process survives DeleteTemporaries with any cutoff
// older than the upload and commits fine, and an abandoned upload older
// than the cutoff is removed. Cutoffs are injected; nothing sleeps.
func RunTemporaries(t *testing.T, newShared func(t *testing.T) Shared) {
	ctx := context.Background()
	large := Data(11, LargeSize)
	half := 6 << 20 // more than one part (5 MiB in tests): the upload has begun

	for _, tc := range []struct {
		name string
		data []byte
		cut  int
	}{{"small", []byte("a small blob being written"), 10}, {"large", large, half}} {
		t.Run("LiveUploadSurvivesOtherProcess/"+tc.name, func(t *testing.T) {
			s := newShared(t)
			started := time.Now()
			w, err := s.Backend.Create(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Cancel()
			writeAll(t, w, tc.data[:tc.cut])

			// Another process opens the storage meanwhile and clears
			// temporaries, with serve's cutoff and with one just before
			// this upload began (the services keep times to the second).
			other := s.Open()
			for _, cutoff := range []time.Time{time.Now().Add(-storage.AbandonedAfter), started.Add(-2 * time.Second)} {
				n, err := other.DeleteTemporaries(ctx, cutoff)
				if err != nil {
					t.Fatalf("DeleteTemporaries(%s): %v", cutoff, err)
				}
				if n != 0 {
					t.Fatalf("DeleteTemporaries with a cutoff %s before a live upload removed %d", started.Sub(cutoff), n)
				}
			}

			writeAll(t, w, tc.data[tc.cut:])
			d := digest.FromBytes(tc.data)
			if err := w.Commit(d); err != nil {
				t.Fatalf("Commit after another process opened the storage: %v", err)
			}
			if got, err := storage.Get(ctx, other, d); err != nil || !bytes.Equal(got, tc.data) {
				t.Fatalf("Get through the other process: %d bytes, %v", len(got), err)
			}
			expectEmpty(t, other)
		})
	}

	t.Run("AbandonedUploadRemoved", func(t *testing.T) {
		s := newShared(t)
		var crashed storage.Writer
		if s.Abandon != nil {
			s.Abandon(t)
		} else {
			w, err := s.Backend.Create(ctx)
			if err != nil {
				t.Fatal(err)
			}
			writeAll(t, w, large[:half])
			crashed = w // never committed nor cancelled: its process died
		}

		other := s.Open()
		// Opening changed nothing: the leftover is still there to count.
		n, err := other.DeleteTemporaries(ctx, time.Now().Add(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Fatalf("DeleteTemporaries with a cutoff after an abandoned upload removed %d, want 1", n)
		}
		expectEmpty(t, other)
		if crashed != nil {
			// What was removed is gone for good: the writer, were it
			// alive after all, cannot publish a partial upload.
			if _, err := crashed.Write(large[half:]); err != nil {
				t.Logf("writing on after the removal: %v", err)
			}
			if err := crashed.Commit(digest.FromBytes(large)); err == nil {
				t.Fatal("an upload removed by DeleteTemporaries was committed")
			}
			if _, err := other.Stat(ctx, digest.FromBytes(large)); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("Stat of the removed upload's digest: %v", err)
			}
			expectEmpty(t, other)
		}
	})
}

package storagetest

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/nixery/nixery/internal/storage"
	"github.com/opencontainers/go-digest"
)

// Unchecked writes into a backend's storage what the backend itself would
// refuse to write: damaged or hostile content, for RunDamaged.
type Unchecked struct {
	// Blob stores data under d without checking it.
	Blob func(b storage.Backend, d digest.Digest, data []byte) error
	// Object stores data under name, whatever its size.
	Object func(b storage.Backend, name string, data []byte) error
}

// RunDamaged checks what a backend does with damaged or hostile content
// in its storage:
//
//   - a blob stored under its digest with other content of another size,
//     as a crash before the data reached the disk, a half-restored backup
//     or a broken disk leaves it, is repaired by the next Commit of its
//     real content rather than kept because its name exists;
//   - a named object over storage.MaxObjectSize is refused by GetObject
//     with storage.ErrTooLarge instead of being read into memory, and
//     PutObject refuses to write one.
func RunDamaged(t *testing.T, newBackend func(t *testing.T) storage.Backend, raw Unchecked) {
	ctx := context.Background()
	t.Run("HugeObject", func(t *testing.T) {
		b := newBackend(t)
		huge := make([]byte, storage.MaxObjectSize+1)
		if err := b.PutObject(ctx, "manifests/huge", huge); !errors.Is(err, storage.ErrTooLarge) {
			t.Errorf("PutObject over MaxObjectSize: %v, want ErrTooLarge", err)
		}
		if _, err := b.GetObject(ctx, "manifests/huge"); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("an object refused by PutObject: %v, want ErrNotFound", err)
		}
		if err := raw.Object(b, "manifests/huge", huge); err != nil {
			t.Fatal(err)
		}
		if data, err := b.GetObject(ctx, "manifests/huge"); !errors.Is(err, storage.ErrTooLarge) {
			t.Errorf("GetObject of an object over MaxObjectSize: %d bytes, %v; want ErrTooLarge", len(data), err)
		}
		most := huge[:storage.MaxObjectSize]
		if err := b.PutObject(ctx, "manifests/largest", most); err != nil {
			t.Fatalf("PutObject of MaxObjectSize bytes: %v", err)
		}
		if data, err := b.GetObject(ctx, "manifests/largest"); err != nil || len(data) != len(most) {
			t.Errorf("GetObject of MaxObjectSize bytes: %d bytes, %v", len(data), err)
		}
	})
	for _, tc := range []struct {
		name string
		data []byte
	}{{"small", []byte("the real content of a blob")}, {"large", Data(13, LargeSize)}} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBackend(t)
			d := digest.FromBytes(tc.data)
			if err := raw.Blob(b, d, tc.data[:len(tc.data)/2]); err != nil {
				t.Fatal(err)
			}
			w, err := b.Create(ctx)
			if err != nil {
				t.Fatal(err)
			}
			writeAll(t, w, tc.data)
			if err := w.Commit(d); err != nil {
				t.Fatal(err)
			}
			if size, err := b.Stat(ctx, d); err != nil || size != int64(len(tc.data)) {
				t.Errorf("Stat after the repairing commit = %d, %v; want %d", size, err, len(tc.data))
			}
			if got, err := storage.Get(ctx, b, d); err != nil || !bytes.Equal(got, tc.data) {
				t.Errorf("the damaged blob was kept: %d bytes, %v", len(got), err)
			}
		})
	}
}

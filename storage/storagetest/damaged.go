package storagetest

import (
	"bytes"
	"context"
	"testing"

	"github.com/nixery/nixery/storage"
	"github.com/opencontainers/go-digest"
)

// RunDamaged checks that a blob damaged in storage — stored under its
// digest with other content of another size, as a crash before the data
// reached the disk, a half-restored backup or a broken disk leaves it —
// is repaired by the next Commit of its real content, rather than kept
// because its name exists. damage stores data under d without any check.
func RunDamaged(t *testing.T, newBackend func(t *testing.T) storage.Backend, damage func(b storage.Backend, d digest.Digest, data []byte) error) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		data []byte
	}{{"small", []byte("the real content of a blob")}, {"large", Data(13, LargeSize)}} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBackend(t)
			d := digest.FromBytes(tc.data)
			if err := damage(b, d, tc.data[:len(tc.data)/2]); err != nil {
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

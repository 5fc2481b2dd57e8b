package storage_test

import (
	"testing"

	"github.com/nixery/nixery/internal/storage"
	"github.com/nixery/nixery/internal/storage/storagetest"
)

func TestFilesystemSuite(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Backend {
		b, err := storage.NewFilesystem(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}

func TestFilesystemTemporaries(t *testing.T) {
	storagetest.RunTemporaries(t, func(t *testing.T) storagetest.Shared {
		dir := t.TempDir()
		open := func() storage.Backend {
			b, err := storage.NewFilesystem(dir)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
		return storagetest.Shared{Backend: open(), Open: open}
	})
}

func TestFilesystemDamaged(t *testing.T) {
	storagetest.RunDamaged(t, func(t *testing.T) storage.Backend {
		b, err := storage.NewFilesystem(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return b
	}, storagetest.Unchecked{Blob: storage.PutUnverified, Object: storage.PutObjectUnchecked})
}

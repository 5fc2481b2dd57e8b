package storage_test

import (
	"testing"

	"github.com/nixery/nixery/storage"
	"github.com/nixery/nixery/storage/storagetest"
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

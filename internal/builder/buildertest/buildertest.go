// Package buildertest makes the Builder that tests outside package
// builder build with: real Nix over the built-in demo package set, with
// filesystem storage in a temporary directory.
package buildertest

import (
	"testing"
	"time"

	"github.com/nixery/nixery/internal/builder"
	"github.com/nixery/nixery/internal/demo/demotest"
	"github.com/nixery/nixery/internal/nix"
	"github.com/nixery/nixery/internal/source"
	"github.com/nixery/nixery/internal/storage"
)

// New returns a Builder over a fresh copy of the demo set (labelled
// "demo set") and fresh filesystem storage. It skips t when Nix is
// missing, or fails it when NIXERY_REQUIRE_E2E is set.
func New(t testing.TB) *builder.Builder {
	t.Helper()
	store, err := storage.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &builder.Builder{
		Source:    source.PathSource{Path: demotest.Set(t), Label: "demo set"},
		Nix:       &nix.Runner{Timeout: 2 * time.Minute, Offline: true},
		Storage:   store,
		CacheTTL:  time.Hour,
		QueueSize: 8,
	}
}

package metadata

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/nixery/nixery/internal/manifest"
	"github.com/nixery/nixery/internal/storage"
)

// HotRecheck is how often a process re-checks in storage that a manifest
// cache entry it holds in memory still exists (builder drops it when it
// does not). The collector waits longer than that between deleting
// expired entries and deleting their blobs (gc.DefaultEntryGrace), so no
// process serves a manifest whose blobs are gone.
const HotRecheck = time.Minute

// ReadManifest reads blob d from store if it can be a manifest
// (manifest.Read: its size is checked before anything is read, and a
// failure of the storage is never taken for a blob that is no manifest).
// A blob that is absent, or is no manifest, is an error wrapping
// storage.ErrNotFound, and in the second case manifest.ErrNotManifest
// too. It is the one reader of stored manifests: the registry serves
// manifests pulled by digest with it, the builder reads its cached
// manifests and the collector the manifests it marks from.
func ReadManifest(ctx context.Context, store storage.Backend, d digest.Digest) ([]byte, error) {
	r, err := store.Open(ctx, d)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	data, err := manifest.Read(r, r.Size())
	if errors.Is(err, manifest.ErrNotManifest) {
		return nil, fmt.Errorf("blob %s: %w (%w)", d, storage.ErrNotFound, err)
	}
	if err != nil {
		return nil, fmt.Errorf("reading manifest %s: %w", d, err)
	}
	return data, nil
}

// ReadManifest is ReadManifest over the metadata store's store.
func (c *Store) ReadManifest(ctx context.Context, d digest.Digest) ([]byte, error) {
	return ReadManifest(ctx, c.Backend, d)
}

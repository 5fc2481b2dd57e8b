package catalog

import (
	"context"
	"errors"
	"fmt"
	"io"
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

// ReadManifest reads blob d if it can be a manifest (manifest.Read: its
// size is checked before anything is read); otherwise an error wrapping
// storage.ErrNotFound. The builder reads its cached manifests with it,
// the collector the manifests it marks from.
func (c *Catalog) ReadManifest(ctx context.Context, d digest.Digest) ([]byte, error) {
	return readManifest(ctx, c.Store, d)
}

func readManifest(ctx context.Context, store storage.Backend, d digest.Digest) ([]byte, error) {
	r, err := store.Open(ctx, d)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	rr := &readErr{r: r}
	data, err := manifest.Read(rr, r.Size())
	if rr.err != nil {
		// The storage failed mid-read (a bucket's connection cut off
		// reads as a short body, io.ErrUnexpectedEOF, which manifest.Read
		// takes for a blob too short to be a manifest). That says
		// nothing about the blob: the collector must stop rather than
		// take a live manifest for none and sweep its blobs.
		return nil, fmt.Errorf("reading manifest %s: %w", d, rr.err)
	}
	if errors.Is(err, manifest.ErrNotManifest) {
		return nil, fmt.Errorf("blob %s: %w (%w)", d, storage.ErrNotFound, err)
	}
	return data, err
}

// readErr remembers the first error other than io.EOF its reader gave.
type readErr struct {
	r   io.Reader
	err error
}

func (e *readErr) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}

package main

import (
	"archive/tar"
	"context"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/nixery/nixery/internal/archive"
	"github.com/nixery/nixery/internal/builder"
	"github.com/nixery/nixery/internal/storage"
)

// pack packs every group into store with the builder's own packer
// (builder.Packer, as a cold build's pack step runs it, without a layer
// cache: every layer is new), limit layers at once (0: the builder's
// default). It returns the total compressed size and the time spent in
// Commit, summed over the layers.
func pack(ctx context.Context, store storage.Backend, groups [][]string, limit int, opts archive.Options) (int64, time.Duration, error) {
	timed := &commitTimer{Backend: store}
	pk := builder.Packer{Storage: timed, Options: opts, Limit: limit}
	layers := make([]builder.Layer, len(groups))
	for i, group := range groups {
		layers[i] = builder.StorePathsLayer(group)
	}
	packed, err := pk.Pack(ctx, layers)
	if err != nil {
		return 0, 0, err
	}
	var total int64
	for _, l := range packed {
		total += l.Size
	}
	return total, timed.sum, nil
}

// packBefore packs as the builder did before issue 15, for comparison
// (-before): NumCPU layers at once in manifest order, each walked while
// packed. It is that old way, frozen, not the builder's code.
func packBefore(ctx context.Context, store storage.Backend, groups [][]string, opts archive.Options) (int64, time.Duration, error) {
	timed := &commitTimer{Backend: store}
	sizes := make([]int64, len(groups))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.NumCPU())
	for i, group := range groups {
		g.Go(func() error {
			w, err := timed.Create(gctx)
			if err != nil {
				return err
			}
			l, err := archive.PackWith(w, opts, func(tw *tar.Writer) error { return archive.StorePaths(tw, group) })
			if err != nil {
				w.Cancel()
				return fmt.Errorf("layer %d: %w", i, err)
			}
			sizes[i] = l.Size
			return w.Commit(l.Digest)
		})
	}
	if err := g.Wait(); err != nil {
		return 0, 0, err
	}
	var total int64
	for _, n := range sizes {
		total += n
	}
	return total, timed.sum, nil
}

// commitTimer is a storage that sums the time its blobs spend in Commit
// (fsync and rename, for the filesystem).
type commitTimer struct {
	storage.Backend
	mu  sync.Mutex
	sum time.Duration
}

func (c *commitTimer) Create(ctx context.Context) (storage.Writer, error) {
	w, err := c.Backend.Create(ctx)
	if err != nil {
		return nil, err
	}
	return timedWriter{w, c}, nil
}

type timedWriter struct {
	storage.Writer
	c *commitTimer
}

func (w timedWriter) Commit(d digest.Digest) error {
	t := time.Now()
	err := w.Writer.Commit(d)
	w.c.mu.Lock()
	w.c.sum += time.Since(t)
	w.c.mu.Unlock()
	return err
}

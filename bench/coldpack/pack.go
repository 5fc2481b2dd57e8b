package main

import (
	"context"
	"fmt"
	"runtime"

	"golang.org/x/sync/errgroup"

	"github.com/nixery/nixery/archive"
	"github.com/nixery/nixery/storage"
)

// packAll packs every group into store as builder.packAll does on a cold
// build (no layer cache hits): same order, same concurrency limit, same
// storage calls. Keep it in step with builder/build.go. It returns the total
// compressed size.
func packAll(ctx context.Context, store storage.Backend, groups [][]string, opts archive.Options) (int64, error) {
	sizes := make([]int64, len(groups))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.NumCPU())
	for i, group := range groups {
		g.Go(func() error {
			w, err := store.Create(gctx)
			if err != nil {
				return err
			}
			l, err := archive.PackWith(w, opts, tarOf(group))
			if err != nil {
				w.Cancel()
				return fmt.Errorf("layer %d: %w", i, err)
			}
			if err := w.Commit(l.Digest); err != nil {
				return err
			}
			sizes[i] = l.Size
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return 0, err
	}
	var total int64
	for _, s := range sizes {
		total += s
	}
	return total, nil
}

package main

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/nixery/nixery/archive"
	"github.com/nixery/nixery/storage"
)

// packLimit is builder.packAll's limit of layers packed at once.
func packLimit() int { return runtime.NumCPU() }

// packAll packs every group into store as builder.packAll does on a cold
// build (no layer cache hits): same order, the same concurrency limit (packLimit, or limit to compare), same
// storage calls. Keep it in step with builder/build.go. It returns the total
// compressed size and the time spent in Commit, summed over the layers.
func packAll(ctx context.Context, store storage.Backend, groups [][]string, limit int, opts archive.Options) (int64, time.Duration, error) {
	sizes := make([]int64, len(groups))
	commits := make([]time.Duration, len(groups))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(limit)
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
			t := time.Now()
			if err := w.Commit(l.Digest); err != nil {
				return err
			}
			commits[i] = time.Since(t)
			sizes[i] = l.Size
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return 0, 0, err
	}
	var total int64
	var commit time.Duration
	for i := range sizes {
		total += sizes[i]
		commit += commits[i]
	}
	return total, commit, nil
}

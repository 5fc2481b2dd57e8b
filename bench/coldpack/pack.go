package main

import (
	"archive/tar"
	"cmp"
	"context"
	"fmt"
	"runtime"
	"slices"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/nixery/nixery/internal/archive"
	"github.com/nixery/nixery/internal/storage"
)

// packAll packs every group into store as builder.packAll does on a cold
// build (no layer cache hits; keep it in step with builder/build.go): every
// group listed first (archive.ListStorePaths, limit layers at once), then
// packed biggest first, limit at once, each streamed into storage by
// Create, archive.PackWith and Commit. With before set it packs as the
// builder did before issue 15: NumCPU layers at once in manifest order,
// each walked while packed. It returns the total compressed size and the
// time spent in Commit, summed over the layers.
func packAll(ctx context.Context, store storage.Backend, groups [][]string, limit int, before bool, opts archive.Options) (int64, time.Duration, error) {
	writes := make([]func(*tar.Writer) error, len(groups))
	order := make([]int, len(groups))
	if before {
		limit = runtime.NumCPU()
		for i, group := range groups {
			order[i] = i
			writes[i] = func(tw *tar.Writer) error { return archive.StorePaths(tw, group) }
		}
	} else {
		sizes := make([]int64, len(groups))
		g := errgroup.Group{}
		g.SetLimit(limit)
		for i, group := range groups {
			order[i] = i
			g.Go(func() error {
				l, err := archive.ListStorePaths(group)
				if err != nil {
					return err
				}
				sizes[i], writes[i] = l.Size(), l.Write
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return 0, 0, err
		}
		slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(sizes[b], sizes[a]) })
	}

	sizes := make([]int64, len(groups))
	commits := make([]time.Duration, len(groups))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(limit)
	for _, i := range order {
		g.Go(func() error {
			w, err := store.Create(gctx)
			if err != nil {
				return err
			}
			l, err := archive.PackWith(w, opts, writes[i])
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

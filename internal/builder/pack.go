package builder

import (
	"archive/tar"
	"cmp"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"

	"golang.org/x/sync/errgroup"

	"github.com/nixery/nixery/internal/archive"
	"github.com/nixery/nixery/internal/metadata"
	"github.com/nixery/nixery/internal/storage"
)

// Packer packs layers into storage: each layer is tarred, compressed,
// hashed and uploaded in one pass (archive.PackWith), several at once.
// It is the pack step of every build, and what bench/coldpack measures.
//
// It runs in two steps, each at most Limit layers at once. First every
// layer is looked up in the Cache, if any, and, when missing, its files
// are listed (a walk of the tree, no file read), which gives its size.
// Then the missing layers are packed biggest first: the archive's
// compressor pool compresses the chunks of every layer in flight, so the
// big layers keep the cores busy from the start while the small ones
// fill the gaps (and the waits on storage: fsync, upload), and no big
// layer is left to pack alone at the end. The listings wait in memory
// until packed: about a hundred bytes per file of the closure.
type Packer struct {
	Storage storage.Backend
	Options archive.Options // compression format and level
	// Limit is the most layers packed (or looked up) at once; 0 means
	// twice the cores. The chunks of every layer in flight share the
	// process's compressor pool (which bounds the CPU and the chunk
	// memory whatever the number of layers), and the extra layers keep
	// the cores busy while others wait on storage (fsync and rename, an
	// upload's round trip) or between a small layer's stages. Each layer
	// in flight holds an open file or, for S3 and GCS, up to one upload
	// part (8 MiB) in memory.
	Limit int
	// Cache, if set, finds layers packed before and learns of the new
	// ones. Without it every layer is packed.
	Cache LayerCache

	// meter, if set, hears the bytes to pack and those packed.
	meter *packMeter
}

// LayerCache is where a Packer finds the layers packed before, under a
// key that names a layer's content and its compression (layerKey).
type LayerCache interface {
	// Layer returns the layer cached under key, or ok false.
	Layer(ctx context.Context, key string) (l archive.Layer, ok bool, err error)
	// Packed is told of a layer just packed and committed; an error
	// fails the pack.
	Packed(ctx context.Context, key string, l archive.Layer) error
}

// Layer is one layer to pack.
type Layer struct {
	// Kind and Paths name the layer's content in the cache: the store
	// paths it holds (Kind "paths"), or the roots a customisation layer
	// links to.
	Kind  string
	Paths []string
	// CreatedBy describes it (its history entry, and errors).
	CreatedBy string
	// List lists the layer's files: the bytes of their tar (an estimate
	// will do: it orders the packing and is the pack progress's total),
	// and the function that writes them to a tar stream.
	List func() (size int64, write func(*tar.Writer) error, err error)
}

// StorePathsLayer is the layer of a group of store paths.
func StorePathsLayer(group []string) Layer {
	return Layer{Kind: "paths", Paths: group, CreatedBy: describeGroup(group),
		List: func() (int64, func(*tar.Writer) error, error) {
			l, err := archive.ListStorePaths(group)
			if err != nil {
				return 0, nil, err
			}
			return l.TarSize(), l.Write, nil
		}}
}

// Concurrency is the most layers pk packs at once.
func (pk *Packer) Concurrency() int {
	if pk.Limit > 0 {
		return pk.Limit
	}
	return 2 * runtime.NumCPU()
}

// Pack packs (or finds in the cache) every layer and returns them in the
// order given.
func (pk *Packer) Pack(ctx context.Context, layers []Layer) ([]archive.Layer, error) {
	out := make([]archive.Layer, len(layers))
	keys := make([]string, len(layers))
	sizes := make([]int64, len(layers))
	writes := make([]func(*tar.Writer) error, len(layers)) // of the missing layers
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(pk.Concurrency())
	for i, l := range layers {
		g.Go(func() error {
			if pk.Cache != nil {
				keys[i] = layerKey(l.Kind, l.Paths, pk.Options.Format, pk.Options.Level)
				cached, ok, err := pk.Cache.Layer(gctx, keys[i])
				if err != nil {
					return fmt.Errorf("layer of %s: %w", l.CreatedBy, err)
				}
				if ok {
					out[i] = cached
					return nil
				}
			}
			var err error
			if sizes[i], writes[i], err = l.List(); err != nil {
				return fmt.Errorf("layer of %s: %w", l.CreatedBy, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}

	var order []int
	var total int64
	for i := range layers {
		if writes[i] != nil {
			order = append(order, i)
			total += sizes[i]
		}
	}
	pk.meter.grow(total)
	// Biggest first; equal sizes in the order given, so the order (not
	// the bytes, which never depend on it) is the same in every run.
	slices.SortStableFunc(order, func(a, c int) int { return cmp.Compare(sizes[c], sizes[a]) })
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(pk.Concurrency())
	for _, i := range order {
		g.Go(func() error {
			l, err := pk.pack(gctx, keys[i], sizes[i], writes[i])
			if err != nil {
				return fmt.Errorf("layer of %s: %w", layers[i].CreatedBy, err)
			}
			out[i] = l
			writes[i] = nil // the listing is no longer needed
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

// pack packs one layer of about size tar bytes with write into storage
// and tells the cache. The meter hears at most size bytes of it while it
// packs, and the rest of size once it is packed.
func (pk *Packer) pack(ctx context.Context, key string, size int64, write func(*tar.Writer) error) (archive.Layer, error) {
	w, err := pk.Storage.Create(ctx)
	if err != nil {
		return archive.Layer{}, err
	}
	opts := pk.Options
	var counted int64
	if pk.meter != nil {
		opts.Progress = func(n int64) {
			if n = min(n, size-counted); n > 0 {
				counted += n
				pk.meter.add(n)
			}
		}
		defer func() {
			if rest := size - counted; rest > 0 {
				pk.meter.add(rest)
			}
		}()
	}
	l, err := archive.PackWith(w, opts, write)
	if err != nil {
		w.Cancel()
		return archive.Layer{}, err
	}
	if err := w.Commit(l.Digest); err != nil {
		return archive.Layer{}, err
	}
	if pk.Cache != nil {
		if err := pk.Cache.Packed(ctx, key, l); err != nil {
			return archive.Layer{}, err
		}
	}
	return l, nil
}

// leasedCache is a build's LayerCache: the metadata store's layer cache, every
// blob it names or packs held in the build's lease.
type leasedCache struct {
	b     *Builder
	lease *metadata.Lease
}

// Layer returns the layer cached for key, its blob held in the lease, or
// ok false if there is none (or its blob was collected before the lease
// named it: it must be packed again).
func (c leasedCache) Layer(ctx context.Context, key string) (archive.Layer, bool, error) {
	l, ok, err := c.b.Metadata().Layer(ctx, key)
	if err != nil || !ok {
		return archive.Layer{}, false, err
	}
	if err := c.lease.Hold(ctx, true, l.Digest); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return archive.Layer{}, false, nil
		}
		return archive.Layer{}, false, err
	}
	c.b.stats.LayersReused.Add(1)
	return l, true, nil
}

// Packed holds a new layer's blob in the lease and caches it under key.
func (c leasedCache) Packed(ctx context.Context, key string, l archive.Layer) error {
	if err := c.lease.Hold(ctx, true, l.Digest); err != nil {
		return err // vanished at once: the whole build runs again
	}
	c.b.stats.LayersPacked.Add(1)
	if err := c.b.Metadata().PutLayer(ctx, key, l); err != nil {
		c.b.logger().Warn("layer cache: entry not stored", "err", err)
	}
	return nil
}

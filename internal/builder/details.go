package builder

import (
	"context"
	"errors"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/nixery/nixery/internal/image"
	"github.com/nixery/nixery/internal/manifest"
	"github.com/nixery/nixery/internal/metadata"
	"github.com/nixery/nixery/internal/nix"
	"github.com/nixery/nixery/internal/source"
	"github.com/nixery/nixery/internal/storage"
)

// ErrNotBuilt is returned by Details for an image that has not been built
// (or whose cache entry expired).
var ErrNotBuilt = errors.New("image not built yet")

// Details describe a built image for people; the metadata store stores them.
type (
	Details   = metadata.Details
	PathInfo  = metadata.PathInfo
	LayerInfo = metadata.LayerInfo
)

// remember stores the details of a freshly built image and adds it to
// the recent images. Failures are logged, never fatal: the image is built.
// packed are the layers of the OCI manifest: groups, then the
// customisation layer.
func (b *Builder) remember(ctx context.Context, key string, req *image.Request, src source.Resolved, res *nix.Result, groups [][]string, packed []manifest.Layer, img *Image) *Details {
	d := &Details{
		Name: req.Name, Tag: req.Tag, Packages: req.Packages, Arch: req.Arch.OCI,
		Source: src.Identity, SourceType: src.Type, SourceName: b.Source.String(), SourceURI: src.URI(),
		Revision: src.Revision,
		Built:    time.Now().UTC(), Roots: res.Roots, Manifests: map[string]digest.Digest{},
	}
	for _, p := range res.Closure {
		d.Closure = append(d.Closure, PathInfo{Path: p.Path, Size: p.NarSize, NarHash: p.NarHash, References: p.References})
	}
	for _, p := range res.Packages {
		d.PackageMeta = append(d.PackageMeta, metadata.PackageInfo{Name: p.Name, Outputs: p.Outputs, Meta: p.Meta})
	}
	for mt, m := range img.Manifests {
		d.Manifests[mt] = m.Digest
	}
	for i, l := range packed {
		li := LayerInfo{Digest: l.Digest, Size: l.Size}
		if i < len(groups) {
			li.Paths = groups[i]
		}
		d.Layers = append(d.Layers, li)
	}
	if err := b.Metadata().PutDetails(ctx, key, d); err != nil {
		b.logger().Warn("image details not stored", "image", req.Name, "err", err)
	}
	return d
}

// Details returns the details of the image req selects, or ErrNotBuilt.
func (b *Builder) Details(ctx context.Context, req *image.Request) (*Details, error) {
	_, key, err := b.resolve(ctx, req)
	if err != nil {
		return nil, err
	}
	if _, _, ok, err := b.cachedManifest(ctx, key, manifest.OCIManifest); err != nil {
		return nil, err
	} else if !ok {
		return nil, ErrNotBuilt
	}
	d, err := b.Metadata().Details(ctx, key)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, ErrNotBuilt
	}
	if err != nil {
		return nil, err
	}
	// The name and tag asked for, which may differ from the first ones
	// that built this image (package order, case).
	d.Name, d.Tag = req.Name, req.Tag
	return d, nil
}

// Recent returns the images built most recently (by any process sharing
// the storage), newest first.
func (b *Builder) Recent() []*Details {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return b.Metadata().Recent(ctx)
}

func (b *Builder) observePhase(name string, d time.Duration) {
	b.phaseHistogram().WithLabelValues(name).Observe(d.Seconds())
}

// Package build turns a build request into a stored image: it asks Nix for
// the packages and their closure, groups the closure into layers, packs
// the layers and the customisation layer into storage, and writes the
// config and the manifests.
//
// Both manifest formats (OCI and Docker schema 2) are written for every
// image, each under its own digest, so a pull by digest works whichever
// format the client first asked for.
package build

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"time"

	"archive/tar"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/nixery/nixery/archive"
	"github.com/nixery/nixery/config"
	"github.com/nixery/nixery/image"
	"github.com/nixery/nixery/layers"
	"github.com/nixery/nixery/manifest"
	"github.com/nixery/nixery/nix"
	"github.com/nixery/nixery/storage"
)

// DefaultLayerBudget is the most layers an image gets, the customisation
// layer included (as in the original Nixery; well under the limits of
// common clients and runtimes).
const DefaultLayerBudget = 100

// Builder builds images. The zero value is not usable: Source, Nix and
// Storage are required.
type Builder struct {
	Source      config.Source
	Nix         *nix.Runner
	Storage     storage.Backend
	LayerBudget int // <= 1 means DefaultLayerBudget
	Compression int // gzip level; 0 = default
	Logger      *slog.Logger
}

// Image is a built image: its manifests by media type.
type Image struct {
	Manifests map[string]Stored
}

// Stored is a manifest as stored.
type Stored struct {
	Data   []byte
	Digest digest.Digest
}

// Manifest builds the image req selects and returns its manifest in
// mediaType. It implements registry.Builder.
func (b *Builder) Manifest(ctx context.Context, req *image.Request, mediaType string) ([]byte, digest.Digest, error) {
	img, err := b.Build(ctx, req)
	if err != nil {
		return nil, "", err
	}
	m, ok := img.Manifests[mediaType]
	if !ok {
		return nil, "", fmt.Errorf("no manifest of type %s", mediaType)
	}
	return m.Data, m.Digest, nil
}

func (b *Builder) logger() *slog.Logger {
	if b.Logger != nil {
		return b.Logger
	}
	return slog.Default()
}

// Build runs the whole pipe for one image.
func (b *Builder) Build(ctx context.Context, req *image.Request) (*Image, error) {
	log := b.logger().With("image", req.Name, "tag", req.Tag)
	start := time.Now()
	srcType, srcArgs, err := b.Source.Render(req.Tag)
	if err != nil {
		return nil, err
	}
	res, err := b.Nix.Build(ctx, nix.Request{SrcType: srcType, SrcArgs: srcArgs, Packages: req.Packages, System: req.Arch.System})
	if err != nil {
		return nil, err
	}
	nixDone := time.Now()
	log.Info("nix finished", "phase", "nix", "seconds", nixDone.Sub(start).Seconds(), "paths", len(res.Closure))

	budget := b.LayerBudget
	if budget <= 1 {
		budget = DefaultLayerBudget
	}
	paths := make([]layers.Path, len(res.Closure))
	for i, p := range res.Closure {
		paths[i] = layers.Path{Name: p.Path, Size: p.NarSize, References: p.References}
	}
	// One slot is kept for the customisation layer.
	groups := layers.Group(paths, budget-1)

	entries, info, err := archive.Customisation(res.Roots)
	if err != nil {
		return nil, fmt.Errorf("customisation layer: %w", err)
	}

	packed := make([]manifest.Layer, len(groups)+1)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.NumCPU())
	for i, group := range groups {
		g.Go(func() error {
			l, err := b.pack(gctx, func(tw *tar.Writer) error { return archive.StorePaths(tw, group) })
			if err != nil {
				return fmt.Errorf("layer of %s: %w", describeGroup(group), err)
			}
			packed[i] = manifest.Layer{Blob: manifest.Blob{Digest: l.Digest, Size: l.Size}, DiffID: l.DiffID, CreatedBy: describeGroup(group)}
			return nil
		})
	}
	g.Go(func() error {
		l, err := b.pack(gctx, func(tw *tar.Writer) error { return archive.Entries(tw, entries) })
		if err != nil {
			return fmt.Errorf("customisation layer: %w", err)
		}
		packed[len(groups)] = manifest.Layer{
			Blob: manifest.Blob{Digest: l.Digest, Size: l.Size}, DiffID: l.DiffID,
			CreatedBy: "nixery customisation layer for " + describeGroup(res.Roots),
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	packDone := time.Now()
	log.Info("layers packed", "phase", "pack", "seconds", packDone.Sub(nixDone).Seconds(), "layers", len(packed))

	img := manifest.Image{Arch: req.Arch.OCI, Env: []string{"PATH=" + info.Path}, Layers: packed}
	if info.CertFile != "" {
		img.Env = append(img.Env, "SSL_CERT_FILE="+info.CertFile, "NIX_SSL_CERT_FILE="+info.CertFile)
	}
	if info.Shell != "" {
		img.Cmd = []string{"bash"}
	}
	out, err := b.store(ctx, img)
	if err != nil {
		return nil, err
	}
	log.Info("image built", "phase", "manifest", "seconds", time.Since(start).Seconds(),
		"digest", out.Manifests[manifest.OCIManifest].Digest)
	return out, nil
}

// pack streams one layer into storage: tar, compress and hash in one pass.
func (b *Builder) pack(ctx context.Context, write func(*tar.Writer) error) (archive.Layer, error) {
	w, err := b.Storage.Create(ctx)
	if err != nil {
		return archive.Layer{}, err
	}
	l, err := archive.Pack(w, b.Compression, write)
	if err != nil {
		w.Cancel()
		return archive.Layer{}, err
	}
	return l, w.Commit(l.Digest)
}

// store writes the config and both manifests.
func (b *Builder) store(ctx context.Context, img manifest.Image) (*Image, error) {
	cfg, err := manifest.Config(img)
	if err != nil {
		return nil, err
	}
	cfgDigest, err := storage.Put(ctx, b.Storage, cfg)
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	out := &Image{Manifests: map[string]Stored{}}
	for _, mt := range manifest.MediaTypes {
		data, err := manifest.Manifest(mt, manifest.Blob{Digest: cfgDigest, Size: int64(len(cfg))}, img.Layers)
		if err != nil {
			return nil, err
		}
		d, err := storage.Put(ctx, b.Storage, data)
		if err != nil {
			return nil, fmt.Errorf("manifest: %w", err)
		}
		out.Manifests[mt] = Stored{Data: data, Digest: d}
	}
	return out, nil
}

// describeGroup names a layer's store paths for its history entry.
func describeGroup(group []string) string {
	names := slices.Clone(group)
	for i, p := range names {
		names[i] = strings.TrimPrefix(p, "/nix/store/")
	}
	if len(names) > 5 {
		names = append(names[:5], fmt.Sprintf("and %d more", len(group)-5))
	}
	return strings.Join(names, ", ")
}

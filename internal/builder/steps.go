package builder

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/nixery/nixery/internal/archive"
	"github.com/nixery/nixery/internal/image"
	"github.com/nixery/nixery/internal/layers"
	"github.com/nixery/nixery/internal/manifest"
	"github.com/nixery/nixery/internal/metadata"
	"github.com/nixery/nixery/internal/nix"
	"github.com/nixery/nixery/internal/source"
	"github.com/nixery/nixery/internal/storage"
)

// build is one run of the pipe for one image, in four steps: realise
// (Nix, as the plan says), group (the closure into layers), pack (the
// layers into storage) and publish (the config, the manifests and the
// manifest cache entry). It does not look at the manifest cache (the
// layer cache is used), and reports its phases (see Phases) to p.
type build struct {
	b    *Builder
	key  string
	req  *image.Request
	src  source.Resolved
	plan plan
	p    *progress
	log  *slog.Logger

	// Every blob the build relies on is held in lease until the manifest
	// cache entry (which then protects them) is written; the closure is
	// rooted in roots (a directory of Nix garbage-collector roots) until
	// it is packed.
	lease *metadata.Lease
	roots string
}

func (b *Builder) newBuild(key string, req *image.Request, src source.Resolved, p *progress, pl plan) *build {
	log := b.logger().With("image", req.Name, "tag", req.Tag, "build", b.buildID.Add(1))
	return &build{b: b, key: key, req: req, src: src, plan: pl, p: p, log: log}
}

// run runs the steps in order and returns the stored image.
func (bd *build) run(ctx context.Context) (*Image, error) {
	start := time.Now()
	bd.b.stats.NixBuilds.Add(1)
	bd.lease = bd.b.Metadata().NewLease()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		bd.lease.Release(ctx)
	}()
	roots, removeRoots, err := nix.TempRoots()
	if err != nil {
		return nil, err
	}
	defer removeRoots()
	bd.roots = roots

	res, err := bd.realise(ctx)
	if err != nil {
		bd.log.Info("build failed", "phase", "nix", "err", err)
		return nil, err
	}
	// Nix announced its own phases (realise, graph) and timed them.
	bd.took("realise", res.Realise, "roots", len(res.Roots))
	bd.took("graph", res.Graph, "paths", len(res.Closure))

	end := bd.begin("layers")
	groups := bd.group(res)
	end("groups", len(groups))

	end = bd.begin("pack")
	pk, err := bd.pack(ctx, res, groups)
	if err != nil {
		bd.log.Info("build failed", "phase", "pack", "err", err)
		return nil, err
	}
	end("layers", len(pk.image.Layers))

	end = bd.begin("manifest")
	img, err := bd.publish(ctx, pk)
	if err != nil {
		return nil, err
	}
	details := bd.b.remember(ctx, bd.key, bd.req, bd.src, res, groups, pk.image.Layers, img)
	if bd.b.Artifacts != nil {
		// Made before the image is announced, so that a client that
		// verifies it right after its pull finds them; a failure is
		// logged and tried again at the next pull, never the build's.
		t := time.Now()
		if err := bd.b.Artifacts.Ensure(ctx, details); err != nil {
			bd.log.Warn("image artifacts not made", "err", err)
		} else {
			bd.log.Info("image artifacts made", "seconds", time.Since(t).Seconds())
		}
	}
	end()
	bd.log.Info("image built", "seconds", time.Since(start).Seconds(), "digest", img.Manifests[manifest.OCIManifest].Digest)
	return img, nil
}

// begin announces the phase (a build's own phases; Nix announces realise
// and graph, see nixPhase) and returns the function that records its end.
func (bd *build) begin(phase string) (end func(args ...any)) {
	bd.p.phase(phase, "")
	t := time.Now()
	return func(args ...any) { bd.took(phase, time.Since(t), args...) }
}

// took records and logs a phase that took d.
func (bd *build) took(phase string, d time.Duration, args ...any) {
	bd.b.observePhase(phase, d)
	bd.log.Info("build phase", append([]any{"phase", phase, "seconds", d.Seconds()}, args...)...)
}

// nixPhase announces the phases Nix starts (nix.Request.Phase); what
// says what Nix does in the realise phase.
func (bd *build) nixPhase(what string) func(string) {
	return func(phase string) {
		msg := what + " " + strings.Join(bd.req.Packages, ", ")
		if phase == "graph" {
			msg = "querying the closure's sizes and references"
		}
		bd.p.phase(phase, msg)
	}
}

// realise has Nix realise the image's packages and report their
// closure, as the plan says: known outputs are realised (falling back to
// an evaluation if they cannot be), else the build evaluates alone.
func (bd *build) realise(ctx context.Context) (*nix.Result, error) {
	var lead func()
	switch pl := bd.plan.(type) {
	case knownPlan:
		res, err := bd.realiseKnown(ctx, "realising (resolved before)", pl.outputs, nil)
		if err == nil {
			res.Programs, res.Packages = pl.programs, pl.packages
			bd.b.stats.Resolved.Add(1)
		}
		if err != errEvaluateAlone {
			return res, err
		}
	case sharedPlan:
		// The evaluation rooted the derivations to realise them from.
		res, err := bd.realiseKnown(ctx, "building", pl.outputs, pl.realise)
		if err == nil {
			res.Programs, res.Packages = pl.programs, pl.packages
			res.Realise += pl.waited // the evaluation is part of realising
		}
		if err != errEvaluateAlone {
			return res, err
		}
	case alonePlan:
		lead = pl.lead
	}
	bd.b.stats.Evaluations.Add(1)
	res, err := bd.b.Nix.Build(ctx, nix.Request{
		SrcType: bd.src.Type, SrcArgs: bd.src.Args, Packages: bd.req.Packages, System: bd.req.Arch.System,
		RootDir: bd.roots, Log: bd.p.line, Phase: bd.nixPhase("evaluating and building"), Evaluated: lead,
	})
	if err != nil {
		return nil, err
	}
	bd.b.recordResolutions(ctx, bd.src.Identity, bd.req.Arch.System, res.Packages)
	return res, nil
}

// errEvaluateAlone: known outputs could not be realised, and the build's
// time is not up; the build evaluates alone.
var errEvaluateAlone = errors.New("evaluate alone")

// realiseKnown realises known outputs (from the derivations in from, if
// set); what says whence they are known.
func (bd *build) realiseKnown(ctx context.Context, what string, outputs, from []string) (*nix.Result, error) {
	res, err := bd.b.Nix.Realise(ctx, nix.KnownRequest{Paths: outputs, Realise: from, RootDir: bd.roots, Log: bd.p.line, Phase: bd.nixPhase(what)})
	if err != nil && ctx.Err() == nil {
		// Whatever Realise met (outputs collected and in no cache, a
		// recorded output that is no output of its derivation, as when
		// meta.outputsToInstall names a passthru attribute, a derivation
		// gone), a build evaluating on its own says whether the image
		// can be built. A package that is broken fails twice; the
		// failure memory spares the next requests.
		bd.b.stats.Reevaluated.Add(1)
		bd.log.Info("known packages cannot be realised; evaluating again", "err", err)
		return nil, errEvaluateAlone
	}
	return res, err
}

// group groups the closure into layers, one slot of the budget kept for
// the customisation layer.
func (bd *build) group(res *nix.Result) [][]string {
	paths := make([]layers.Path, len(res.Closure))
	for i, p := range res.Closure {
		paths[i] = layers.Path{Name: p.Path, Size: p.NarSize, References: p.References}
	}
	return layers.GroupWith(paths, bd.b.budget()-1, layers.Options{Popularity: bd.b.Popularity})
}

// packed is what the pack step made: the image (its layers, compressed
// in the builder's format, and the runtime settings the customisation
// layer implies) and the layers of its Docker manifest.
type packed struct {
	image  manifest.Image
	docker []manifest.Layer
}

// pack packs (or finds in the layer cache) the layers of the groups and
// the customisation layer. zstd layers are for clients that read OCI
// manifests; a client that only reads Docker's schema 2 gets gzip layers
// of the same tars.
func (bd *build) pack(ctx context.Context, res *nix.Result, groups [][]string) (packed, error) {
	// The customisation layer only reads the roots' top directories;
	// computing it is cheap even when its layer is cached.
	setup := archive.Setup{NonRoot: bd.req.NonRoot, Programs: res.Programs}
	entries, info, err := archive.Customisation(res.Roots, setup)
	if err != nil {
		return packed{}, fmt.Errorf("customisation layer: %w", err)
	}
	custom := "customisation"
	if setup.NonRoot {
		custom += "/nonroot" // a nonroot image's differs from the root image's
	}
	all := make([]Layer, 0, len(groups)+1)
	for _, group := range groups {
		all = append(all, StorePathsLayer(group))
	}
	all = append(all, Layer{Kind: custom, Paths: res.Roots, CreatedBy: "nixery customisation layer for " + describeGroup(res.Roots),
		List: func() (int64, func(*tar.Writer) error, error) {
			var n int64
			for _, e := range entries {
				n += int64(len(e.Data))
			}
			return n, func(tw *tar.Writer) error { return archive.Entries(tw, entries) }, nil
		}})
	meter := newPackMeter(bd.p, bd.b.HoldPack)
	layers, err := bd.packAs(ctx, all, bd.b.Format, bd.b.Compression, meter)
	if err != nil {
		return packed{}, err
	}
	dockerLayers := layers
	if bd.b.Format != archive.Gzip {
		if dockerLayers, err = bd.packAs(ctx, all, archive.Gzip, 0, meter); err != nil {
			return packed{}, err
		}
	}
	meter.finish()
	img := manifest.Image{Arch: bd.req.Arch.OCI, Layers: layers}
	manifest.Runtime(info).Apply(&img)
	return packed{image: img, docker: dockerLayers}, nil
}

// packAs packs the layers in format at level (see Packer), each blob held
// in the build's lease, and describes them for the manifests; meter
// hears the progress.
func (bd *build) packAs(ctx context.Context, layers []Layer, format archive.Format, level int, meter *packMeter) ([]manifest.Layer, error) {
	pk := Packer{Storage: bd.b.Storage, Options: archive.Options{Format: format, Level: level}, Cache: leasedCache{bd.b, bd.lease}, meter: meter}
	done, err := pk.Pack(ctx, layers)
	if err != nil {
		return nil, err
	}
	out := make([]manifest.Layer, len(done))
	for i, l := range done {
		out[i] = manifest.Layer{Blob: manifest.Blob{Digest: l.Digest, Size: l.Size}, DiffID: l.DiffID, CreatedBy: layers[i].CreatedBy, MediaType: manifest.LayerMediaType(format.String())}
	}
	return out, nil
}

// publish stores the config and the manifests and names them in the
// manifest cache.
func (bd *build) publish(ctx context.Context, pk packed) (*Image, error) {
	out, err := bd.store(ctx, pk)
	if err != nil {
		return nil, err
	}
	if err := bd.b.storeManifestEntry(ctx, bd.key, out, bd.src.Immutable); err != nil {
		// The image is stored; only the shortcut to it is missing.
		bd.log.Warn("manifest cache: entry not stored", "err", err)
	}
	// Every blob must still be there now that the entry names them (the
	// lease held them; this catches a deletion already in flight then).
	all := []digest.Digest{}
	for _, m := range out.Manifests {
		refs, _ := manifest.References(m.Data)
		all = append(all, append(refs, m.Digest)...)
	}
	if _, err := bd.b.Metadata().Missing(ctx, all); err != nil {
		return nil, err
	}
	return out, nil
}

// store writes the config and both manifests, held in the lease first;
// the Docker manifest lists the Docker layers (the same tars,
// gzip-compressed).
func (bd *build) store(ctx context.Context, pk packed) (*Image, error) {
	cfg, err := manifest.Config(pk.image)
	if err != nil {
		return nil, err
	}
	cfgBlob := manifest.Blob{Digest: digest.FromBytes(cfg), Size: int64(len(cfg))}
	out := &Image{Manifests: map[string]Stored{}}
	held := []digest.Digest{cfgBlob.Digest}
	for _, mt := range manifest.MediaTypes {
		layers := pk.image.Layers
		if mt == manifest.DockerManifest {
			layers = pk.docker
		}
		data, err := manifest.Manifest(mt, cfgBlob, layers)
		if err != nil {
			return nil, err
		}
		out.Manifests[mt] = Stored{Data: data, Digest: digest.FromBytes(data)}
		held = append(held, out.Manifests[mt].Digest)
	}
	if err := bd.lease.Hold(ctx, false, held...); err != nil {
		return nil, err
	}
	st := bd.b.Storage
	if _, err := storage.Put(ctx, st, cfg); err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	for _, mt := range manifest.MediaTypes {
		if _, err := storage.Put(ctx, st, out.Manifests[mt].Data); err != nil {
			return nil, fmt.Errorf("manifest: %w", err)
		}
	}
	return out, nil
}

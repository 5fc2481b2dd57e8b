package builder

import (
	"context"
	"errors"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/nixery/nixery/internal/image"
	"github.com/nixery/nixery/internal/metadata"
	"github.com/nixery/nixery/internal/nix"
	"github.com/nixery/nixery/internal/source"
)

// plan says how a build gets its packages from Nix. It is one of three:
//
//	knownPlan   an earlier evaluation of the package set resolved every
//	            package (the metadata store says so): Nix only realises the
//	            outputs, no evaluation at all
//	sharedPlan  an evaluation shared with other builds resolved them just
//	            now: Nix realises the outputs from the derivations that
//	            evaluation rooted
//	alonePlan   the build evaluates on its own (nix.Runner.Build), which
//	            also says why a name does not resolve
//
// A known or shared plan that fails to realise (for a reason other than
// the build's time running out) falls back to evaluating alone: the fast
// path may never fail where the slow one succeeds.
type plan interface {
	// release lets go of what the plan holds once the build is over.
	release()
}

// knownPlan: the outputs and main programs an earlier evaluation recorded,
// and what each package resolved to (with its meta).
type knownPlan struct {
	outputs, programs []string
	packages          []nix.Resolution
}

// sharedPlan: the outputs, main programs and the derivations to realise
// them from (nix.Resolution.Realise) of a shared evaluation, whose roots
// the build holds until release, and the time the build waited for it.
type sharedPlan struct {
	outputs, programs, realise []string
	packages                   []nix.Resolution
	share                      *resolved
	waited                     time.Duration
}

// alonePlan: the build evaluates alone. If lead is set, the build leads
// (see evaluations): it calls lead when its evaluation is over, which lets
// the next batch of the package set start.
type alonePlan struct {
	lead func()
}

func (knownPlan) release()    {}
func (p sharedPlan) release() { p.share.release() }
func (p alonePlan) release() {
	if p.lead != nil {
		p.lead() // a build that never got to evaluate ends its lead here
	}
}

// plan finds req's output paths before the build starts: from the
// metadata store, else from an evaluation shared with the other builds that
// need one of the same package set (see evaluations), unless the build
// leads (it holds a slot and nobody evaluates the package set): then it
// evaluates alone. An error only means that ctx ended; every other
// failure leaves the build to evaluate alone.
func (b *Builder) plan(ctx context.Context, req *image.Request, src source.Resolved, p *progress, hasSlot bool) (plan, error) {
	if known := b.known(ctx, req, src); known != nil && len(known.outputs) > 0 {
		return *known, nil
	}
	start := time.Now()
	shared, lead, err := b.evals.join(ctx, setOf(src, req.Arch.System), req.Packages, hasSlot)
	if lead != nil {
		return alonePlan{lead: lead}, nil
	}
	p.phase("realise", "evaluating the package set for "+strings.Join(req.Packages, ", "))
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return alonePlan{}, nil
	}
	pl := sharedPlan{share: shared, waited: time.Since(start)}
	for _, name := range req.Packages {
		r, ok := shared.res[name]
		if !ok {
			shared.release()
			return alonePlan{}, nil // Build evaluates again and says why
		}
		pl.outputs = append(pl.outputs, r.Outputs...)
		pl.programs = append(pl.programs, r.Programs...)
		pl.realise = append(pl.realise, r.Realise)
		r.Name = name
		pl.packages = append(pl.packages, r)
	}
	if len(pl.outputs) == 0 {
		shared.release()
		return alonePlan{}, nil
	}
	b.stats.Shared.Add(1)
	if shared.builds > 1 {
		p.line("evaluated together with other new images")
	}
	return pl, nil
}

// resolveShared runs one shared evaluation (see evaluations) and records
// what it resolved, so that later builds of these packages need none.
func (b *Builder) resolveShared(ctx context.Context, set evalSet, names []string, rootDir string) ([]nix.Resolution, error) {
	b.stats.Evaluations.Add(1)
	res, err := b.Nix.Resolve(ctx, nix.ResolveRequest{SrcType: set.Type, SrcArgs: set.Args, System: set.System, Names: names, RootDir: rootDir})
	if err != nil {
		return nil, err
	}
	b.recordResolutions(ctx, set.Identity, set.System, res)
	b.logger().Info("package set evaluated", "names", len(names), "resolved", len(res))
	return res, nil
}

// known returns the output paths, main programs and meta of req's
// packages if an evaluation of the same package set resolved every one of
// them before (within the cache time for a moving source) and recorded
// their meta (a resolution recorded before Nixery read meta counts as
// none: the image's SBOMs need it), or nil. The resolutions are read a
// few at once (a round trip each on a bucket); the first name not
// resolved ends the reading.
func (b *Builder) known(ctx context.Context, req *image.Request, src source.Resolved) *knownPlan {
	found := make([]metadata.Package, len(req.Packages))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, name := range req.Packages {
		g.Go(func() error {
			r, ok, err := b.Metadata().Package(gctx, src.Identity, req.Arch.System, name)
			if err != nil {
				if gctx.Err() == nil {
					b.logger().Warn("resolved packages not read; evaluating", "err", err)
				}
				return err
			}
			if !ok || r.Meta == nil || !r.Fresh(src.Immutable, b.CacheTTL, time.Now()) {
				return errNotResolved
			}
			found[i] = r
			return nil
		})
	}
	if g.Wait() != nil {
		return nil
	}
	all := &knownPlan{}
	for i, r := range found {
		all.outputs = append(all.outputs, r.Outputs...)
		all.programs = append(all.programs, r.Programs...)
		all.packages = append(all.packages, nix.Resolution{Name: req.Packages[i], Outputs: r.Outputs, Programs: r.Programs, Meta: *r.Meta})
	}
	return all
}

// errNotResolved ends known's reading at a name not resolved before.
var errNotResolved = errors.New("not resolved before")

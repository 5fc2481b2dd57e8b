package builder

import (
	"context"
	"errors"
	"time"

	"github.com/nixery/nixery/internal/fault"
	"github.com/nixery/nixery/internal/image"
	"github.com/nixery/nixery/internal/metadata"
	"github.com/nixery/nixery/internal/source"
	"github.com/nixery/nixery/internal/storage"
)

// DefaultClaimTTL: a replica that dies mid-build (kill -9, a lost node)
// has its builds taken over by another replica after this long.
const DefaultClaimTTL = 30 * time.Second

// ErrDraining is returned for a new build while the process shuts down;
// the registry answers a retryable 503 (another replica takes it).
var ErrDraining = fault.New("this replica is shutting down and starts no new builds; try again", fault.Fault{Kind: fault.Unavailable, RetryAfter: 2 * time.Second})

// buildOnce returns the image of key built once for the whole fleet: the
// cold path of a pull, after the flight of this process started (see
// start). It is one loop of look-up, claim and queue:
//
//  1. Look up the manifest cache. The request looked it up before its
//     flight started (Manifest, Watch: the warm path), but a flight of
//     the same image may have ended since, and a replica that waits for
//     another one's build (3) finds its result here.
//  2. Claim the build for the fleet (metadata.TakeClaim).
//  3. Not claimed: another replica builds it. Wait, showing its phases,
//     and go round again; if its claim lapses (it died), the next claim
//     is ours and the build is taken over.
//  4. Claimed: take a place in the build queue (ErrBusy if full), and
//     look up once more: the replica that held the claim may have
//     finished between our look-up and our claim.
//  5. Build (buildQueued).
func (b *Builder) buildOnce(ctx context.Context, key string, req *image.Request, src source.Resolved, p *progress) (*Image, error) {
	var watch metadata.ClaimWatch
	wait, waiting, seenPhase := 100*time.Millisecond, false, ""
	for {
		if img, err := b.cachedImage(ctx, key); err != nil || img != nil { // 1
			return img, err
		}
		claim, err := b.Metadata().TakeClaim(ctx, key, b.claimTTL(), &watch) // 2
		if err != nil {
			return nil, err
		}
		if claim == nil { // 3
			if !waiting {
				b.logger().Info("building on another replica; waiting for it", "image", req.Name, "tag", req.Tag)
				p.note("building on another replica; waiting for it")
				waiting = true
			}
			if watch.Phase != "" && watch.Phase != seenPhase {
				// The holder's phase, as it published it in its claim.
				seenPhase = watch.Phase
				p.phase(seenPhase, "on another replica")
			}
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			wait = min(wait*2, time.Second)
			continue
		}
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			claim.Done(ctx)
		}()
		if waiting {
			b.logger().Info("the replica building it stopped renewing its lease; building here", "image", req.Name, "tag", req.Tag)
			p.note("the other replica stopped; building here")
		}
		// Replicas waiting for this build see its phases.
		defer p.mirrorPhases(claim)()
		t, err := b.limit.enter() // 4
		if err != nil {
			b.stats.Rejected.Add(1)
			return nil, err
		}
		defer t.leave()
		if img, err := b.cachedImage(ctx, key); err != nil || img != nil {
			return img, err
		}
		return b.buildQueued(ctx, t, key, req, src, p) // 5
	}
}

func (b *Builder) claimTTL() time.Duration {
	if b.ClaimTTL > 0 {
		return b.ClaimTTL
	}
	return DefaultClaimTTL
}

// buildQueued builds and caches the image of a build that holds ticket t.
// While it waits in the queue, it already learns its packages' output
// paths (see plan): from the metadata store, or from an evaluation it shares
// with the other builds that need one. An image whose blob vanished
// under the build (a garbage collection deleted it before the build's
// lease named it) is built once more, which packs the missing layers
// again.
func (b *Builder) buildQueued(ctx context.Context, t *ticket, key string, req *image.Request, src source.Resolved, p *progress) (*Image, error) {
	pl, err := b.plan(ctx, req, src, p, t.slot)
	if err != nil {
		return nil, err
	}
	defer pl.release()
	if err := t.wait(ctx); err != nil {
		return nil, err
	}
	p.setRunning()
	if b.inSlot != nil {
		b.inSlot(req)
	}
	img, err := b.newBuild(key, req, src, p, pl).run(ctx)
	if errors.Is(err, storage.ErrNotFound) {
		b.logger().Warn("a blob vanished during the build; building once more", "image", req.Name, "err", err)
		img, err = b.newBuild(key, req, src, p, pl).run(ctx)
	}
	if err != nil {
		b.stats.BuildsError.Add(1)
		return nil, err
	}
	b.stats.BuildsOK.Add(1)
	return img, nil
}

// cachedImage returns the image of key from the manifest cache, or nil.
func (b *Builder) cachedImage(ctx context.Context, key string) (*Image, error) {
	h, err := b.cachedEntry(ctx, key)
	if err != nil || h == nil {
		return nil, err
	}
	img := &Image{Manifests: map[string]Stored{}}
	for mt, data := range h.manifests {
		img.Manifests[mt] = Stored{Data: data, Digest: h.entry.Manifests[mt]}
	}
	return img, nil
}

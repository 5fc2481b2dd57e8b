package metadata

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nixery/nixery/internal/storage"
)

// Build claims, the fleet-wide single flight: the replica that starts
// building an image first claims it with an object only one can create,
// and the others wait for its manifest cache entry instead of building it
// too.
//
//	flights/<key>/<generation>   the claim of one replica, renewed while it builds
//
// (The objects keep their first name, flights/, so that replicas of
// every version find each other's claims.)
//
// A claim is renewed every TTL/3. A replica that watches a claim and sees
// it unchanged for a whole TTL (measured on its own clock, so no two
// clocks are compared) takes the build over by creating the next
// generation, which again only one replica can do. A holder that ends
// deletes its claims.

const claimsPrefix = "flights/"

// ClaimWatch is what a waiting replica saw of the claim on a build: the
// generation, its last modification time and when that last changed.
type ClaimWatch struct {
	gen     int
	mod     time.Time
	changed time.Time // local clock (Store.Now)
	// Phase is the build phase the holder last published ("" before
	// the first), for the waiters' own progress.
	Phase string
}

// claim is the content of a claim object.
type claim struct {
	ID    string `json:"id"`
	Phase string `json:"phase,omitempty"`
}

// Claim is this replica's claim on a build.
type Claim struct {
	c    *Store
	name string
	id   string
	stop chan struct{}
	done chan struct{}

	mu    sync.Mutex
	phase string
}

// TakeClaim claims the build of key for this replica, unless another
// replica holds a live claim: then it returns nil and the caller waits and
// asks again (with the same watch), which takes the build over once the
// claim has not been renewed for ttl.
func (c *Store) TakeClaim(ctx context.Context, key string, ttl time.Duration, watch *ClaimWatch) (*Claim, error) {
	prefix, err := keyed(claimsPrefix, key)
	if err != nil {
		return nil, err
	}
	prefix += "/"
	gen, mod := 0, time.Time{}
	err = c.Backend.ListObjects(ctx, prefix, func(name string, m time.Time) error {
		if g, err := strconv.Atoi(keyOf(name, prefix)); err == nil && g > gen {
			gen, mod = g, m
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	now := c.now()
	if gen > 0 {
		if gen != watch.gen || !mod.Equal(watch.mod) {
			phase := watch.Phase
			if raw, err := c.Backend.GetObject(ctx, fmt.Sprintf("%s%010d", prefix, gen)); err == nil {
				var cl claim
				if json.Unmarshal(raw, &cl) == nil && cl.Phase != "" {
					phase = cl.Phase
				}
			}
			*watch = ClaimWatch{gen: gen, mod: mod, changed: now, Phase: phase}
			return nil, nil // live: renewed since we last looked
		}
		if now.Sub(watch.changed) < ttl {
			return nil, nil
		}
		// Not renewed for a whole ttl: its holder died. Take it over.
	}
	var id [12]byte
	rand.Read(id[:])
	f := &Claim{c: c, name: fmt.Sprintf("%s%010d", prefix, gen+1), id: hex.EncodeToString(id[:]), stop: make(chan struct{}), done: make(chan struct{})}
	err = c.Backend.CreateObject(ctx, f.name, f.content())
	if errors.Is(err, storage.ErrExists) {
		// Someone else was quicker; an earlier attempt of ours that
		// did succeed would hold our id.
		var cl claim
		if raw, gerr := c.Backend.GetObject(ctx, f.name); gerr != nil || json.Unmarshal(raw, &cl) != nil || cl.ID != f.id {
			*watch = ClaimWatch{}
			return nil, nil
		}
		err = nil
	}
	if err != nil {
		return nil, err
	}
	go f.renew(ttl / 3)
	return f, nil
}

func (f *Claim) renew(every time.Duration) {
	renewEvery(f.stop, f.done, every, func(ctx context.Context) {
		if err := f.c.Backend.PutObject(ctx, f.name, f.content()); err != nil {
			f.c.logger().Warn("build claim not renewed", "claim", f.name, "err", err)
		}
	})
}

func (f *Claim) content() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	data, _ := json.Marshal(claim{ID: f.id, Phase: f.phase})
	return data
}

// SetPhase publishes the build's phase in the claim, for the replicas
// that wait for it. It writes at once (phases are few); a failure only
// leaves the waiters a phase behind.
func (f *Claim) SetPhase(ctx context.Context, phase string) {
	f.mu.Lock()
	f.phase = phase
	f.mu.Unlock()
	if err := f.c.Backend.PutObject(ctx, f.name, f.content()); err != nil {
		f.c.logger().Warn("build claim: phase not published", "claim", f.name, "err", err)
	}
}

// Done ends the claim: it stops renewing it and deletes it, with the
// lapsed generations before it, so that a replica waiting for this build
// looks at the manifest cache (or, if this build failed, builds itself).
func (f *Claim) Done(ctx context.Context) {
	close(f.stop)
	<-f.done
	prefix := f.name[:len(f.name)-10]
	var names []string
	_ = f.c.Backend.ListObjects(ctx, prefix, func(name string, _ time.Time) error {
		if name <= f.name {
			names = append(names, name)
		}
		return nil
	})
	for _, name := range names {
		if err := f.c.Backend.DeleteObject(ctx, name); err != nil {
			f.c.logger().Warn("build claim not deleted; it lapses", "claim", name, "err", err)
		}
	}
}

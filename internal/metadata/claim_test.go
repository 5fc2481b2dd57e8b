package metadata_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nixery/nixery/internal/metadata"
	"github.com/nixery/nixery/internal/storage"
	"github.com/nixery/nixery/internal/storage/storagetest"
)

// One claim per build across replicas; a claim that stops being renewed
// is taken over after its TTL by exactly one of the waiting replicas; the
// local clock decides (injected), never a comparison of two clocks.
func TestClaims(t *testing.T) {
	storagetest.EachBackend(t, func(t *testing.T, newStore func() storage.Backend) {
		ctx := context.Background()
		store := newStore()
		now := time.Now()
		var mu sync.Mutex
		clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
		advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
		replicas := make([]*metadata.Store, 4)
		for i := range replicas {
			replicas[i] = &metadata.Store{Backend: store, Now: clock}
		}
		key := metadata.Key("an image")
		const ttl = time.Hour // renewals never happen during the test

		// Four replicas ask at once: one claim.
		claims := make([]*metadata.Claim, len(replicas))
		watches := make([]metadata.ClaimWatch, len(replicas))
		var wg sync.WaitGroup
		for i, c := range replicas {
			wg.Add(1)
			go func() {
				defer wg.Done()
				f, err := c.TakeClaim(ctx, key, ttl, &watches[i])
				if err != nil {
					t.Error(err)
				}
				claims[i] = f
			}()
		}
		wg.Wait()
		holder := -1
		for i, f := range claims {
			if f != nil {
				if holder >= 0 {
					t.Fatalf("replicas %d and %d both claimed the build", holder, i)
				}
				holder = i
			}
		}
		if holder < 0 {
			t.Fatal("nobody claimed the build")
		}

		// The others look again: live (first sight), live (within ttl).
		for round, step := range []time.Duration{0, ttl / 2} {
			advance(step)
			for i, c := range replicas {
				if i == holder {
					continue
				}
				if f, err := c.TakeClaim(ctx, key, ttl, &watches[i]); f != nil || err != nil {
					t.Fatalf("round %d: replica %d took a live claim: %v", round, i, err)
				}
			}
		}

		// The holder died (no renewal for a whole ttl): exactly one takes over.
		advance(ttl)
		var takers []int
		for i, c := range replicas {
			if i == holder {
				continue
			}
			f, err := c.TakeClaim(ctx, key, ttl, &watches[i])
			if err != nil {
				t.Fatal(err)
			}
			if f != nil {
				takers = append(takers, i)
				defer f.Done(ctx)
			}
		}
		if len(takers) != 1 {
			t.Fatalf("replicas %v took the lapsed claim over, want exactly one", takers)
		}
		// The old holder ending deletes its own claim, not the new one.
		claims[holder].Done(ctx)
		for i, c := range replicas {
			if i == holder || i == takers[0] {
				continue
			}
			if f, _ := c.TakeClaim(ctx, key, ttl, &watches[i]); f != nil {
				t.Errorf("replica %d claimed a build that replica %d holds", i, takers[0])
			}
		}
	})
}

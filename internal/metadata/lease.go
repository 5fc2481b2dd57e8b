package metadata

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/nixery/nixery/internal/storage"
)

// LeaseTTL is how long a lease protects its blobs after it was last
// written; a running build renews its lease every LeaseTTL/4, so only the
// lease of a build whose process died lapses.
const LeaseTTL = 10 * time.Minute

// Lease is what a build in progress relies on: the blobs it took from the
// layer cache, packed, or is about to reference from its config and
// manifests. The collector never deletes a blob held by a live lease, and
// re-reads the leases right before each deletion. The build calls Release
// after its manifest cache entry is written; from then on the entry
// protects the blobs.
type Lease struct {
	c    *Store
	name string

	mu      sync.Mutex
	digests []digest.Digest
	version int // counts changes of digests

	// One write at a time; Holds that arrive while one is in flight share
	// the next (group commit), so a build packing many layers at once
	// costs a few writes, not one per layer.
	wmu     sync.Mutex
	wrote   int  // the version the last completed write stored
	written bool // the lease exists in storage

	stop chan struct{}
	done chan struct{}
}

// NewLease starts an empty lease; nothing is written until Hold. It is
// renewed in the background until Release.
func (c *Store) NewLease() *Lease {
	var id [16]byte
	rand.Read(id[:])
	l := &Lease{c: c, name: leasesPrefix + hex.EncodeToString(id[:]), stop: make(chan struct{}), done: make(chan struct{})}
	go l.renew(LeaseTTL / 4)
	return l
}

func (l *Lease) renew(every time.Duration) {
	renewEvery(l.stop, l.done, every, func(ctx context.Context) {
		l.wmu.Lock()
		var err error
		if l.written {
			err = l.write(ctx)
		}
		l.wmu.Unlock()
		if err != nil {
			l.c.logger().Warn("build lease not renewed", "err", err)
		}
	})
}

// renewEvery calls renew every interval, each call bounded by the
// interval, until stop is closed; then it closes done.
func renewEvery(stop <-chan struct{}, done chan<- struct{}, every time.Duration, renew func(ctx context.Context)) {
	defer close(done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), every)
			renew(ctx)
			cancel()
		}
	}
}

// write stores the lease with every digest held now; l.wmu is held.
func (l *Lease) write(ctx context.Context) error {
	l.mu.Lock()
	data, err := json.Marshal(l.digests)
	v := l.version
	l.mu.Unlock()
	if err != nil {
		return err
	}
	if err := l.c.Backend.PutObject(ctx, l.name, data); err != nil {
		return fmt.Errorf("build lease: %w", err)
	}
	l.wrote, l.written = v, true
	return nil
}

// sync returns once a write that stored version want (or later) has
// completed.
func (l *Lease) sync(ctx context.Context, want int) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if l.written && l.wrote >= want {
		return nil // a write that began after our change covered it
	}
	return l.write(ctx)
}

// Hold adds digests to the lease, writes it, and then checks that every
// one of them that must exist (mustExist) still does: a blob the
// collector deleted before the lease was visible is reported missing
// (an error wrapping storage.ErrNotFound), and the build packs it again.
// Blobs about to be written (a config, manifests) are held with
// mustExist false.
func (l *Lease) Hold(ctx context.Context, mustExist bool, digests ...digest.Digest) error {
	if len(digests) == 0 {
		return nil
	}
	l.mu.Lock()
	for _, d := range digests {
		if !slices.Contains(l.digests, d) {
			l.digests = append(l.digests, d)
			l.version++
		}
	}
	want := l.version
	l.mu.Unlock()
	if err := l.sync(ctx, want); err != nil || !mustExist {
		return err
	}
	_, err := l.c.Missing(ctx, digests)
	return err
}

// Release stops renewing the lease after writing it once more. It is not
// deleted: it lapses LeaseTTL later, by when every collector's next mark
// sees the manifest cache entry the build wrote (see gc.Collect). Safe to call
// more than once.
func (l *Lease) Release(ctx context.Context) {
	select {
	case <-l.stop:
		return
	default:
	}
	close(l.stop)
	<-l.done
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if !l.written {
		return
	}
	if err := l.write(ctx); err != nil {
		l.c.logger().Warn("build lease not renewed at its end", "lease", l.name, "err", err)
	}
}

// Missing checks that every blob in digests exists (concurrently, each
// once). It
// returns the missing ones and an error wrapping storage.ErrNotFound if
// there are any; other storage errors are returned as they are.
func (c *Store) Missing(ctx context.Context, digests []digest.Digest) ([]digest.Digest, error) {
	// Each blob once: an image's two manifests name the same config and,
	// for gzip, the same layers.
	digests = slices.Compact(slices.Sorted(slices.Values(digests)))
	var mu sync.Mutex
	var missing []digest.Digest
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for _, d := range digests {
		g.Go(func() error {
			_, err := c.Backend.Stat(gctx, d)
			if errors.Is(err, storage.ErrNotFound) {
				mu.Lock()
				missing = append(missing, d)
				mu.Unlock()
				return nil
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return missing, fmt.Errorf("blob %s: %w", missing[0], storage.ErrNotFound)
	}
	return nil, nil
}

package gc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/nixery/nixery/internal/every"
	"github.com/nixery/nixery/internal/metadata"
	"github.com/nixery/nixery/internal/storage"
)

// Collector runs Collect in-process at an interval, on one replica at a time:
// before each run a replica takes the lease gc/lease in storage, and a
// replica whose lease is younger than the interval (by the storage's
// clock) is left to do it. Two replicas that race for the lease both
// read back the one that was written last, so normally one runs; should
// both run, nothing breaks (GC is safe against a concurrent GC), it only
// costs requests.
type Collector struct {
	Metadata *metadata.Store
	Interval time.Duration
	Options  Options
	// Report receives the outcome of every run this replica made.
	Report func(Report, error)

	// settle is how long a replica waits between writing the lease and
	// reading it back; tests shorten it.
	settle time.Duration
	holder string
}

// Run collects every Interval until ctx ends. The first run is one
// interval after the start, so a fleet that restarts does not collect at
// once.
func (s *Collector) Run(ctx context.Context) {
	every.Run(ctx, s.Interval, every.Fixed(s.Interval), func(ctx context.Context) {
		ran, rep, err := s.Once(ctx)
		if (ran || err != nil) && s.Report != nil {
			s.Report(rep, err)
		}
	})
}

// Once runs one collection if this replica gets the lease.
func (s *Collector) Once(ctx context.Context) (ran bool, rep Report, err error) {
	ok, err := s.takeLease(ctx)
	if err != nil || !ok {
		return false, rep, err
	}
	rep, err = Collect(ctx, s.Metadata, s.Options)
	return true, rep, err
}

// takeLease takes the collector's lease unless another replica holds it.
func (s *Collector) takeLease(ctx context.Context) (bool, error) {
	if s.holder == "" {
		var id [12]byte
		rand.Read(id[:])
		s.holder = hex.EncodeToString(id[:])
	}
	if s.settle == 0 {
		s.settle = 2 * time.Second
	}
	c := s.Metadata
	held, err := c.CollectorLeaseHolder(ctx)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return false, err
	}
	if err == nil && held != s.holder {
		// Another replica's: still valid if written within the
		// interval, by the storage's clock (a probe written now).
		age, err := c.CollectorLeaseAge(ctx)
		if err != nil {
			return false, err
		}
		if age < s.Interval/2 {
			return false, nil
		}
	}
	if err := c.PutCollectorLease(ctx, s.holder); err != nil {
		return false, err
	}
	select {
	case <-time.After(s.settle):
	case <-ctx.Done():
		return false, ctx.Err()
	}
	got, err := c.CollectorLeaseHolder(ctx)
	if err != nil {
		return false, fmt.Errorf("gc lease: %w", err)
	}
	return got == s.holder, nil
}

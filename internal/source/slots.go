package source

import (
	"context"
	"sync"
)

// slots bounds how many processes (git, nix) a source runs at once. The
// zero value works; the bound is given on first use.
type slots struct {
	once sync.Once
	ch   chan struct{}
}

// acquire waits for one of n slots until ctx ends; release gives it back.
func (s *slots) acquire(ctx context.Context, n int) (release func(), err error) {
	s.once.Do(func() { s.ch = make(chan struct{}, n) })
	select {
	case s.ch <- struct{}{}:
		return func() { <-s.ch }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

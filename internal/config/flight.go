package config

import (
	"context"
	"sync"
	"time"
)

// flights is a single flight per key whose call is cancelled when its last
// waiter leaves. Unlike x/sync/singleflight's, nobody is left to want such
// a call, and a crawler's abandoned requests must not keep git or Nix
// processes running. The zero value works.
type flights[V any] struct {
	mu    sync.Mutex
	calls map[string]*flight[V]
}

type flight[V any] struct {
	done    chan struct{}
	v       V
	err     error
	waiters int
	cancel  context.CancelFunc
}

// do joins the call of key in flight, or starts fn for it with a context
// of its own, bounded by timeout and ended early only when every waiter
// has left; then it waits for the call or for ctx. joined (optional) runs
// once the caller counts as a waiter (a test hook).
func (fs *flights[V]) do(ctx context.Context, key string, timeout time.Duration, fn func(ctx context.Context) (V, error), joined func()) (V, error) {
	fs.mu.Lock()
	f := fs.calls[key]
	if f == nil {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		f = &flight[V]{done: make(chan struct{}), cancel: cancel}
		if fs.calls == nil {
			fs.calls = map[string]*flight[V]{}
		}
		fs.calls[key] = f
		go func() {
			defer cancel()
			v, err := fn(fctx)
			fs.mu.Lock()
			if fs.calls[key] == f {
				delete(fs.calls, key)
			}
			f.v, f.err = v, err
			fs.mu.Unlock()
			close(f.done)
		}()
	}
	f.waiters++
	fs.mu.Unlock()
	if joined != nil {
		joined()
	}
	select {
	case <-f.done:
		return f.v, f.err
	case <-ctx.Done():
		fs.mu.Lock()
		f.waiters--
		if f.waiters == 0 {
			f.cancel()
			if fs.calls[key] == f {
				delete(fs.calls, key) // the next caller starts afresh
			}
		}
		fs.mu.Unlock()
		var zero V
		return zero, ctx.Err()
	}
}

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

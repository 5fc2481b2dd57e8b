// Package flight runs one call per key at a time, shared by every caller
// that asks for the same key meanwhile: a thousand requests for a name
// that is being resolved wait for the one resolution.
//
// Unlike golang.org/x/sync/singleflight, the call has a context of its
// own: it does not end when the first caller gives up (the others still
// want it), but it does end when the last one does, since nobody is left
// to want its result and a crawler's abandoned requests must not keep
// processes running.
package flight

import (
	"context"
	"sync"
	"time"
)

// Group is the calls in flight, by key. The zero value works.
type Group[K comparable, V any] struct {
	mu    sync.Mutex
	calls map[K]*call[V]
}

type call[V any] struct {
	done    chan struct{} // closed when v and err are set
	v       V
	err     error
	waiters int
	cancel  context.CancelFunc
}

// Do joins the call of key in flight, or starts fn for it with a context
// of its own (keeping ctx's values, not its end), bounded by timeout and
// ended early only when every waiter has left; then it waits for the
// call or for ctx. A call that ended is forgotten: the next Do of key
// starts another. joined, if not nil, runs once the caller counts as a
// waiter (a hook for tests).
func (g *Group[K, V]) Do(ctx context.Context, key K, timeout time.Duration, fn func(ctx context.Context) (V, error), joined func()) (V, error) {
	g.mu.Lock()
	c := g.calls[key]
	if c == nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		c = &call[V]{done: make(chan struct{}), cancel: cancel}
		if g.calls == nil {
			g.calls = map[K]*call[V]{}
		}
		g.calls[key] = c
		go func() {
			defer cancel()
			v, err := fn(cctx)
			g.mu.Lock()
			g.forget(key, c)
			c.v, c.err = v, err
			g.mu.Unlock()
			close(c.done)
		}()
	}
	c.waiters++
	g.mu.Unlock()
	if joined != nil {
		joined()
	}
	select {
	case <-c.done:
		return c.v, c.err
	case <-ctx.Done():
		g.mu.Lock()
		c.waiters--
		if c.waiters == 0 {
			c.cancel()
			g.forget(key, c) // the next caller starts afresh
		}
		g.mu.Unlock()
		var zero V
		return zero, ctx.Err()
	}
}

// forget removes c from the calls in flight if it is still key's; g.mu
// is held.
func (g *Group[K, V]) forget(key K, c *call[V]) {
	if g.calls[key] == c {
		delete(g.calls, key)
	}
}

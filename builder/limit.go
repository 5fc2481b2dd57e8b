package builder

import (
	"context"
	"errors"
	"sync/atomic"
)

// ErrBusy is returned when the build queue is full; the registry answers
// 429 TOOMANYREQUESTS with Retry-After.
var ErrBusy = errors.New("too many builds are running or waiting; try again shortly")

// limiter lets at most `slots` builds run at once and at most `queue`
// wait for a slot; more are refused with ErrBusy at once, so that a burst
// of new images cannot pile up unbounded Nix processes or memory.
type limiter struct {
	slots   chan struct{}
	queue   int64
	waiting atomic.Int64
}

func newLimiter(slots, queue int) *limiter {
	if slots < 1 {
		slots = 1
	}
	return &limiter{slots: make(chan struct{}, slots), queue: int64(queue)}
}

// acquire waits for a slot; release must be called after a nil error.
func (l *limiter) acquire(ctx context.Context) error {
	select {
	case l.slots <- struct{}{}:
		return nil
	default:
	}
	if l.waiting.Add(1) > l.queue {
		l.waiting.Add(-1)
		return ErrBusy
	}
	defer l.waiting.Add(-1)
	select {
	case l.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *limiter) release() { <-l.slots }

// running and queued report the limiter's state for metrics.
func (l *limiter) running() int { return len(l.slots) }
func (l *limiter) queued() int  { return int(l.waiting.Load()) }

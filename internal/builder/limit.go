package builder

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/nixery/nixery/internal/fault"
)

// ErrBusy is returned when the build queue is full; the registry answers
// 429 TOOMANYREQUESTS with Retry-After.
var ErrBusy = fault.New("too many builds are running or waiting; try again shortly", fault.Fault{Kind: fault.TooMany, RetryAfter: 10 * time.Second})

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

// ticket is a build admitted by the limiter: it holds a slot, or a place
// in the queue until wait gives it one. A build in the queue may already
// do work that needs no slot (its share of an evaluation, see
// evaluations).
type ticket struct {
	l      *limiter
	slot   bool
	queued bool
}

// enter admits a build: with a slot if one is free, else with a place in
// the queue, else not (ErrBusy). The ticket must be left.
func (l *limiter) enter() (*ticket, error) {
	select {
	case l.slots <- struct{}{}:
		return &ticket{l: l, slot: true}, nil
	default:
	}
	if l.waiting.Add(1) > l.queue {
		l.waiting.Add(-1)
		return nil, ErrBusy
	}
	return &ticket{l: l, queued: true}, nil
}

// wait returns once t holds a slot, leaving its place in the queue.
func (t *ticket) wait(ctx context.Context) error {
	if t.slot {
		return nil
	}
	select {
	case t.l.slots <- struct{}{}:
		t.slot = true
		t.leaveQueue()
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// leave gives back what t holds.
func (t *ticket) leave() {
	t.leaveQueue()
	if t.slot {
		<-t.l.slots
		t.slot = false
	}
}

func (t *ticket) leaveQueue() {
	if t.queued {
		t.l.waiting.Add(-1)
		t.queued = false
	}
}

// running and queued report the limiter's state for metrics.
func (l *limiter) running() int { return len(l.slots) }
func (l *limiter) queued() int  { return int(l.waiting.Load()) }

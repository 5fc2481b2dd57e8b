// Package every runs a function again and again at an interval until its
// context ends: the loop of the server's background work (readiness
// checks, the package source's health, scheduled garbage collection).
//
// The interval is read again after each run, so a caller may lengthen it
// as it goes; the next run starts an interval after the last one ended,
// so runs never overlap and a slow run delays, not crowds, the next.
package every

import (
	"context"
	"time"
)

// Run calls fn after first, then interval() after each call ends, until
// ctx ends. A first of 0 runs fn at once. Once ctx has ended fn is not
// called again.
func Run(ctx context.Context, first time.Duration, interval func() time.Duration, fn func(context.Context)) {
	t := time.NewTimer(first)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if ctx.Err() != nil {
			return // both were ready: an ended context wins
		}
		fn(ctx)
		t.Reset(interval())
	}
}

// Fixed is an interval that does not change.
func Fixed(d time.Duration) func() time.Duration {
	return func() time.Duration { return d }
}

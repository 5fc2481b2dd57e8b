package every

import (
	"context"
	"testing"
	"time"
)

// Run calls fn at once when first is 0, again after each interval, and
// returns when ctx ends, calling fn no more.
func TestRunRepeatsUntilCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := make(chan int, 10)
	n := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, 0, Fixed(time.Millisecond), func(context.Context) {
			n++
			calls <- n
			if n == 3 {
				cancel()
			}
		})
	}()
	for want := 1; want <= 3; want++ {
		if got := <-calls; got != want {
			t.Fatalf("call %d, want %d", got, want)
		}
	}
	<-done
	if len(calls) != 0 {
		t.Errorf("fn ran after ctx ended")
	}
}

// A context that ends before the first run means no run at all.
func TestRunNotAfterCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	Run(ctx, time.Hour, Fixed(time.Hour), func(context.Context) { t.Error("fn ran") })
}

// The interval is read after each run, so it can change as the caller goes.
func TestRunReadsIntervalEachTime(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reads := 0
	Run(ctx, 0, func() time.Duration {
		reads++
		if reads == 2 {
			cancel()
		}
		return time.Millisecond
	}, func(context.Context) {})
	if reads != 2 {
		t.Errorf("interval read %d times, want 2", reads)
	}
}

package flight

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestDo covers how callers share a call, by how many callers there are
// and which of them give up before it ends.
func TestDo(t *testing.T) {
	for _, tt := range []struct {
		name      string
		callers   int
		leave     int  // callers that give up before the call ends
		wantCalls int  // calls of fn
		cancelled bool // whether the call's context ended early
	}{
		{"one caller", 1, 0, 1, false},
		{"callers share one call", 5, 0, 1, false},
		{"a caller leaving does not end the call", 5, 4, 1, false},
		{"the last caller leaving ends it", 3, 3, 1, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var g Group[string, int]
			var calls atomic.Int32
			release := make(chan struct{})
			ended := make(chan error, 1)
			fn := func(ctx context.Context) (int, error) {
				calls.Add(1)
				select {
				case <-release:
					ended <- nil
					return 42, nil
				case <-ctx.Done():
					ended <- ctx.Err()
					return 0, ctx.Err()
				}
			}
			var joined sync.WaitGroup
			joined.Add(tt.callers)
			results := make(chan error, tt.callers)
			cancels := make([]context.CancelFunc, tt.callers)
			for i := range tt.callers {
				ctx, cancel := context.WithCancel(context.Background())
				cancels[i] = cancel
				go func() {
					v, err := g.Do(ctx, "k", time.Minute, fn, joined.Done)
					if err == nil && v != 42 {
						err = errors.New("wrong value")
					}
					results <- err
				}()
			}
			joined.Wait()
			for i := range tt.leave {
				cancels[i]()
				if err := <-results; !errors.Is(err, context.Canceled) {
					t.Fatalf("a caller that left got %v", err)
				}
			}
			if !tt.cancelled {
				close(release)
			}
			err := <-ended
			if got := err != nil; got != tt.cancelled {
				t.Errorf("call ended with %v, want cancelled %v", err, tt.cancelled)
			}
			for range tt.callers - tt.leave {
				if err := <-results; err != nil {
					t.Errorf("a caller got %v", err)
				}
			}
			if n := int(calls.Load()); n != tt.wantCalls {
				t.Errorf("%d calls, want %d", n, tt.wantCalls)
			}
			for _, c := range cancels {
				c()
			}
		})
	}
}

func TestDoTimeout(t *testing.T) {
	var g Group[string, int]
	_, err := g.Do(context.Background(), "k", 10*time.Millisecond, func(ctx context.Context) (int, error) {
		<-ctx.Done()
		return 0, ctx.Err()
	}, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want the call's deadline", err)
	}
}

// TestDoAgain: an ended call is forgotten, its error included, and keys
// are apart.
func TestDoAgain(t *testing.T) {
	var g Group[string, int]
	n := 0
	fn := func(context.Context) (int, error) {
		n++
		if n == 1 {
			return 0, errors.New("first fails")
		}
		return n, nil
	}
	if _, err := g.Do(context.Background(), "k", time.Minute, fn, nil); err == nil {
		t.Fatal("first call: no error")
	}
	if v, err := g.Do(context.Background(), "k", time.Minute, fn, nil); err != nil || v != 2 {
		t.Fatalf("second call: %d, %v", v, err)
	}
	if v, err := g.Do(context.Background(), "other", time.Minute, fn, nil); err != nil || v != 3 {
		t.Fatalf("another key: %d, %v", v, err)
	}
}

// TestDoKeepsValues: the call sees ctx's values, not its end.
func TestDoKeepsValues(t *testing.T) {
	type key struct{}
	var g Group[string, string]
	ctx := context.WithValue(context.Background(), key{}, "v")
	v, err := g.Do(ctx, "k", time.Minute, func(ctx context.Context) (string, error) {
		s, _ := ctx.Value(key{}).(string)
		return s, nil
	}, nil)
	if err != nil || v != "v" {
		t.Errorf("got %q, %v", v, err)
	}
}

// TestConcurrent is for -race: callers that stay and callers that leave,
// over a few keys.
func TestConcurrent(t *testing.T) {
	var g Group[int, int]
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i%4)*time.Millisecond)
			defer cancel()
			if i%2 == 0 {
				ctx = context.Background()
			}
			v, err := g.Do(ctx, i%3, time.Second, func(ctx context.Context) (int, error) {
				select {
				case <-time.After(2 * time.Millisecond):
					return 7, nil
				case <-ctx.Done():
					return 0, ctx.Err()
				}
			}, nil)
			if err == nil && v != 7 {
				t.Errorf("got %d", v)
			}
			if i%2 == 0 && err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("a caller that stayed got %v", err)
			}
		})
	}
	wg.Wait()
}

package fault

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

type notThere struct{}

func (notThere) Error() string { return "no such thing" }
func (notThere) Fault() Fault  { return Fault{Kind: NotFound} }

type broken struct{ err error }

func (e broken) Error() string { return "broken: " + e.err.Error() }
func (e broken) Unwrap() error { return e.err }
func (broken) Fault() Fault    { return Fault{Kind: Internal} }

var errBusy = New("busy", Fault{Kind: TooMany, RetryAfter: 10 * time.Second})

func TestOf(t *testing.T) {
	for _, tt := range []struct {
		name    string
		err     error
		status  int
		retry   int
		message string
	}{
		{"a domain error speaks for itself", fmt.Errorf("building: %w", notThere{}), 404, 0, "no such thing"},
		{"a sentinel keeps its context", fmt.Errorf("queue: %w", errBusy), 429, 10, "queue: busy"},
		{"retry rounded up", New("down", Fault{Kind: Unavailable, RetryAfter: 1500 * time.Millisecond}), 503, 2, "down"},
		{"retry at least 1 s", New("down", Fault{Kind: Unavailable}), 503, 1, "down"},
		{"no retry when not retryable", New("gone", Fault{Kind: NotFound, RetryAfter: time.Minute}), 404, 0, "gone"},
		{"invalid", New("bad name", Fault{Kind: Invalid}), 400, 0, "bad name"},
		{"denied", New("no client certificate", Fault{Kind: Denied}), 403, 0, "no client certificate"},
		{"cancelled", fmt.Errorf("resolve: %w", context.Canceled), 499, 0, "request cancelled"},
		{"an internal error over a cancellation", fmt.Errorf("build: %w", broken{context.Canceled}), 500, 0, "build: broken: context canceled"},
		{"anything else", errors.New("disk on fire"), 500, 0, "disk on fire"},
	} {
		f := Of(tt.err)
		if f.Kind.Status() != tt.status || f.RetrySeconds() != tt.retry || Message(tt.err) != tt.message {
			t.Errorf("%s: %d, %d, %q; want %d, %d, %q", tt.name, f.Kind.Status(), f.RetrySeconds(), Message(tt.err), tt.status, tt.retry, tt.message)
		}
	}
	if !errors.Is(fmt.Errorf("x: %w", errBusy), errBusy) {
		t.Error("a sentinel is not found by errors.Is")
	}
}

func TestSeconds(t *testing.T) {
	for d, want := range map[time.Duration]int{0: 1, time.Millisecond: 1, time.Second: 1, 1001 * time.Millisecond: 2, 10 * time.Second: 10, 59500 * time.Millisecond: 60} {
		if got := Seconds(d); got != want {
			t.Errorf("Seconds(%v) = %d, want %d", d, got, want)
		}
	}
}

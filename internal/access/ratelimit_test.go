package access_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nixery/nixery/internal/access"
)

// clock is a settable time for the limiter.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

// ctxOf returns the context a request from remote has behind Identify.
func ctxOf(t *testing.T, remote string) context.Context {
	t.Helper()
	var ctx context.Context
	h := (&access.Guard{}).Identify(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { ctx = r.Context() }))
	req := httptest.NewRequest("GET", "/", nil)
	req.RemoteAddr = remote
	h.ServeHTTP(httptest.NewRecorder(), req)
	return ctx
}

func TestBuildLimiter(t *testing.T) {
	c := &clock{t: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	l := &access.BuildLimiter{PerMinute: 6, Burst: 2, Now: c.now}
	a, b := ctxOf(t, "192.0.2.1:1"), ctxOf(t, "192.0.2.2:1")
	admit := func(ctx context.Context) time.Duration {
		t.Helper()
		err := l.Admit(ctx)
		if err == nil {
			return 0
		}
		var rl *access.RateLimitedError
		if !errors.As(err, &rl) || rl.RetryAfter <= 0 {
			t.Fatalf("Admit: %v", err)
		}
		return rl.RetryAfter
	}
	// The burst, then one build every 10 s.
	for i := 0; i < 2; i++ {
		if d := admit(a); d != 0 {
			t.Fatalf("build %d refused, retry after %v", i+1, d)
		}
	}
	if d := admit(a); d != 10*time.Second {
		t.Errorf("third build: retry after %v, want 10s", d)
	}
	// Another client has its own bucket.
	if d := admit(b); d != 0 {
		t.Errorf("other client refused: %v", d)
	}
	c.advance(4 * time.Second)
	if d := admit(a); d != 6*time.Second {
		t.Errorf("after 4 s: retry after %v, want 6s", d)
	}
	c.advance(6 * time.Second)
	if d := admit(a); d != 0 {
		t.Errorf("after 10 s: refused, retry after %v", d)
	}
	if d := admit(a); d != 10*time.Second {
		t.Errorf("retry after %v, want 10s", d)
	}
	// Refusals cost nothing: the bucket refills at the same pace.
	c.advance(10 * time.Second)
	if d := admit(a); d != 0 {
		t.Errorf("after a refusal and 10 s: refused, %v", d)
	}

	// Zero values admit everything.
	for _, l := range []*access.BuildLimiter{nil, {}, {Burst: 3}} {
		for i := 0; i < 100; i++ {
			if err := l.Admit(a); err != nil {
				t.Fatalf("%+v: %v", l, err)
			}
		}
	}
}

func TestBuildLimiterDefaultBurst(t *testing.T) {
	c := &clock{t: time.Unix(0, 0)}
	for _, tt := range []struct {
		perMinute float64
		burst     int
	}{{0.5, 1}, {1, 1}, {2.5, 3}, {30, 30}} {
		l := &access.BuildLimiter{PerMinute: tt.perMinute, Now: c.now}
		ctx := ctxOf(t, "192.0.2.1:1")
		n := 0
		for l.Admit(ctx) == nil && n < 1000 {
			n++
		}
		if n != tt.burst {
			t.Errorf("%v a minute: burst %d, want %d", tt.perMinute, n, tt.burst)
		}
	}
}

// TestBuildLimiterBounded sends builds from many addresses: the table
// stays at its bound, and a client evicted long ago starts afresh.
func TestBuildLimiterBounded(t *testing.T) {
	c := &clock{t: time.Unix(0, 0)}
	l := &access.BuildLimiter{PerMinute: 1, MaxClients: 100, Now: c.now}
	first := ctxOf(t, "192.0.2.1:1")
	if l.Admit(first) != nil || l.Admit(first) == nil {
		t.Fatal("first client: want one build, then a refusal")
	}
	for i := 0; i < 1000; i++ {
		l.Admit(ctxOf(t, fmt.Sprintf("10.%d.%d.1:1", i/256, i%256)))
		if n := l.Clients(); n > 100 {
			t.Fatalf("%d buckets, bound 100", n)
		}
	}
	if l.Admit(first) != nil {
		t.Errorf("evicted client not started afresh")
	}
	// An IPv6 host does not get a bucket per address of its /64.
	l = &access.BuildLimiter{PerMinute: 1, Now: c.now}
	if l.Admit(ctxOf(t, "[2001:db8:1:2::1]:1")) != nil {
		t.Fatal("first IPv6 build refused")
	}
	if l.Admit(ctxOf(t, "[2001:db8:1:2::ffff]:1")) == nil {
		t.Error("same /64, new address: admitted")
	}
	if l.Admit(ctxOf(t, "[2001:db8:1:3::1]:1")) != nil {
		t.Error("another /64 refused")
	}
}

func TestRateLimitedMessage(t *testing.T) {
	if msg := (&access.RateLimitedError{RetryAfter: 9500 * time.Millisecond}).Error(); !strings.Contains(msg, "in 10 s") {
		t.Errorf("message %q does not say when", msg)
	}
}

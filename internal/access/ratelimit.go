package access

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/nixery/nixery/internal/bounded"
	"github.com/nixery/nixery/internal/fault"
)

// BuildLimiter limits how many new builds each client may start: a token
// bucket per client (Client), refilled at PerMinute builds a minute, holding
// at most Burst. Only starting a build costs a token; cache hits and
// joining a build in flight are free (the builder calls Admit only for a
// new build).
//
// The buckets are kept in a table of at most MaxClients, the least
// recently used evicted first, so a flood of source addresses cannot grow
// memory; an evicted client starts again with a full bucket, as one idle
// long enough would anyway. IPv6 clients are counted per /64, the
// smallest network a site is usually given, so that one host cannot take
// a fresh bucket per address.
//
// The zero value admits everything.
type BuildLimiter struct {
	PerMinute  float64          // new builds a minute per client; 0: unlimited
	Burst      int              // builds a client may start at once; 0: PerMinute rounded up, at least 1
	MaxClients int              // buckets kept; 0: 10,000
	Now        func() time.Time // the clock; nil: time.Now

	mu      sync.Mutex
	buckets *bounded.Map[string, *rate.Limiter] // by limiterKey
}

// RateLimitedError is returned by Admit when the client has no build left
// for now; RetryAfter is when it will have one.
type RateLimitedError struct {
	RetryAfter time.Duration
}

func (e *RateLimitedError) Error() string {
	return fmt.Sprintf("build rate limit reached: this client may start a new build in %d s (images already built are served meanwhile)", fault.Seconds(e.RetryAfter))
}

// Fault: too many builds, until RetryAfter.
func (e *RateLimitedError) Fault() fault.Fault {
	return fault.Fault{Kind: fault.TooMany, RetryAfter: e.RetryAfter}
}

const defaultMaxClients = 10000

// Admit takes one build from the bucket of ctx's client, or returns a
// *RateLimitedError if it is empty.
func (l *BuildLimiter) Admit(ctx context.Context) error {
	if l == nil || l.PerMinute <= 0 {
		return nil
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.bucket(limiterKey(clientOf(ctx)))
	if lim.AllowN(now, 1) {
		return nil
	}
	return &RateLimitedError{RetryAfter: untilToken(lim, now)}
}

func (l *BuildLimiter) now() time.Time {
	if l.Now != nil {
		return l.Now()
	}
	return time.Now()
}

// untilToken is how long lim takes from now to hold a token again.
func untilToken(lim *rate.Limiter, now time.Time) time.Duration {
	missing := 1 - lim.TokensAt(now)
	// To the millisecond, so float error does not turn 6 s into 5.999…
	wait := time.Duration(math.Round(missing/float64(lim.Limit())*1000)) * time.Millisecond
	return max(wait, time.Millisecond)
}

// wait returns how long ctx's client has to wait for a token (0: it has
// one), taking none.
func (l *BuildLimiter) wait(ctx context.Context) time.Duration {
	if l.PerMinute <= 0 {
		return 0
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.bucket(limiterKey(clientOf(ctx)))
	if lim.TokensAt(now) >= 1 {
		return 0
	}
	return untilToken(lim, now)
}

// charge takes a token from ctx's client, into debt if it has none (a
// charge that raced with others past wait still counts).
func (l *BuildLimiter) charge(ctx context.Context) {
	if l.PerMinute <= 0 {
		return
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.bucket(limiterKey(clientOf(ctx))).ReserveN(now, 1)
}

// Clients is the number of buckets kept.
func (l *BuildLimiter) Clients() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buckets == nil {
		return 0
	}
	return l.buckets.Len()
}

// bucket returns key's limiter, making it (and evicting the least recently
// used) if needed. Called with l.mu held.
func (l *BuildLimiter) bucket(key string) *rate.Limiter {
	if l.buckets == nil {
		maxClients := l.MaxClients
		if maxClients <= 0 {
			maxClients = defaultMaxClients
		}
		l.buckets = bounded.New[string, *rate.Limiter](maxClients)
	}
	if lim, ok := l.buckets.Get(key); ok {
		return lim
	}
	burst := l.Burst
	if burst <= 0 {
		burst = max(1, int(math.Ceil(l.PerMinute)))
	}
	lim := rate.NewLimiter(rate.Limit(l.PerMinute/60), burst)
	l.buckets.Put(key, lim)
	return lim
}

// limiterKey is the bucket of a client: its user, or its address (an IPv6
// address by its /64).
func limiterKey(c client) string {
	if c.user != "" {
		return "user " + c.user
	}
	if a, err := netip.ParseAddr(c.ip); err == nil && a.Is6() && !a.Is4In6() {
		p, _ := a.Prefix(64)
		return "ip " + p.String()
	}
	return "ip " + c.ip
}

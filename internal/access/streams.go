package access

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nixery/nixery/internal/fault"
)

// Streams bounds the answers that stay open while a build runs, the
// build event streams: at most PerClient at once for one client (its
// user, else its address, an IPv6 address by its /64, as for the build
// rate limit) and Total in all. Joining a build in flight starts no
// build, so the build rate limit does not bound them, and each holds a
// connection and goroutines until the build ends; without this bound one
// client could open them without end.
//
// The table holds only clients with a stream open, so it is bounded by
// Total. The zero value uses the defaults.
type Streams struct {
	PerClient int // streams one client may hold; 0: DefaultStreamsPerClient
	Total     int // streams in all; 0: DefaultStreams

	mu    sync.Mutex
	open  map[string]int
	total int
}

// The defaults of Streams: a browser tab holds one stream, `nixery
// build` one, so a client that needs more than 32 at once is a crowd
// behind one address (or a script gone wrong).
const (
	DefaultStreamsPerClient = 32
	DefaultStreams          = 4096
)

// TooManyStreamsError is returned by Streams.Open over a limit.
type TooManyStreamsError struct {
	Limit     int
	PerClient bool // the client's limit, not the server's
}

func (e *TooManyStreamsError) Error() string {
	if e.PerClient {
		return fmt.Sprintf("too many build event streams open from this client: at most %d at once", e.Limit)
	}
	return fmt.Sprintf("too many build event streams open on this server: at most %d at once", e.Limit)
}

// Fault: only watching builds is refused (images are served); a stream
// closes soon enough to try again in a few seconds.
func (e *TooManyStreamsError) Fault() fault.Fault {
	return fault.Fault{Kind: fault.TooMany, RetryAfter: 5 * time.Second}
}

// Open takes a place for a stream of ctx's client (see Client), or
// returns a *TooManyStreamsError. The caller calls release when the
// stream ends.
func (s *Streams) Open(ctx context.Context) (release func(), err error) {
	perClient, total := s.PerClient, s.Total
	if perClient <= 0 {
		perClient = DefaultStreamsPerClient
	}
	if total <= 0 {
		total = DefaultStreams
	}
	key := limiterKey(clientOf(ctx))
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.total >= total:
		return nil, &TooManyStreamsError{Limit: total}
	case s.open[key] >= perClient:
		return nil, &TooManyStreamsError{Limit: perClient, PerClient: true}
	}
	if s.open == nil {
		s.open = map[string]int{}
	}
	s.open[key]++
	s.total++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.total--
			if s.open[key]--; s.open[key] <= 0 {
				delete(s.open, key)
			}
		})
	}, nil
}

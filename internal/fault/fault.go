// Package fault is where errors say what kind they are, so that the two
// HTTP faces (registry, web) answer every error alike without knowing the
// packages it comes from.
//
// A domain error reports its kind with a method, Fault, found with
// errors.As anywhere in the chain (as CNCF distribution's error codes
// carry their HTTP status); a sentinel value gets one from New. An error
// that reports nothing is Internal, unless it is the request's own
// cancellation. The kinds are few on purpose: what a client can do about
// the answer, not where it came from.
//
//	kind         status  Retry-After
//	NotFound     404     -
//	Invalid      400     -
//	Denied       403     -
//	TooMany      429     yes (at least 1 s)
//	Unavailable  503     yes (at least 1 s)
//	Internal     500     -
//	Canceled     499     - (only logged: the client has gone)
package fault

import (
	"context"
	"errors"
	"math"
	"net/http"
	"time"
)

// Kind is what an error says about the request that met it.
type Kind int

const (
	// Internal is the server's own failure; the zero Kind.
	Internal Kind = iota
	// NotFound: what the request names does not exist (an unknown
	// package, a tag that names no revision).
	NotFound
	// Invalid: the request itself is malformed (an invalid image name).
	Invalid
	// TooMany: this client, or everyone, asks too much at the moment;
	// try again after RetryAfter.
	TooMany
	// Unavailable: the server cannot serve it for now (shutting down,
	// storage down, a package set Nix cannot evaluate); try again after
	// RetryAfter.
	Unavailable
	// Canceled: the client went away before the answer.
	Canceled
	// Denied: this client may not have it, whatever credentials it
	// sends (no client certificate from the CA the server asks for).
	Denied
)

// StatusClientClosed is the status of a request whose client went away
// before the answer (nginx's 499): only logged, nobody reads it.
const StatusClientClosed = 499

// Status is the HTTP status of the kind.
func (k Kind) Status() int {
	switch k {
	case NotFound:
		return http.StatusNotFound
	case Invalid:
		return http.StatusBadRequest
	case TooMany:
		return http.StatusTooManyRequests
	case Unavailable:
		return http.StatusServiceUnavailable
	case Canceled:
		return StatusClientClosed
	case Denied:
		return http.StatusForbidden
	}
	return http.StatusInternalServerError
}

// Fault is what an error reports of itself.
type Fault struct {
	Kind Kind
	// RetryAfter is when to try again, for TooMany and Unavailable.
	RetryAfter time.Duration
}

// RetrySeconds is the Retry-After header of the fault in seconds: 0 (no
// header) unless its kind is retryable.
func (f Fault) RetrySeconds() int {
	if f.Kind != TooMany && f.Kind != Unavailable {
		return 0
	}
	return Seconds(f.RetryAfter)
}

// Seconds is d in whole seconds for a Retry-After header: rounded up,
// at least 1.
func Seconds(d time.Duration) int {
	return max(int(math.Ceil(d.Seconds())), 1)
}

// Reporter is an error that reports its fault.
type Reporter interface {
	error
	Fault() Fault
}

// Of returns the fault the first Reporter in err's chain reports; else
// Canceled for the request's own cancellation; else Internal.
func Of(err error) Fault {
	var r Reporter
	switch {
	case errors.As(err, &r):
		return r.Fault()
	case errors.Is(err, context.Canceled):
		return Fault{Kind: Canceled}
	}
	return Fault{Kind: Internal}
}

// Message is what an answer says of err. An error of its own type that
// reports a kind other than Internal speaks for itself: what wraps it is
// the path it took through the server, for the log. A sentinel (New) is
// said with its context, which tells what was busy or unavailable; so is
// every Internal error, for its operator; a cancellation is only that.
func Message(err error) string {
	var r Reporter
	if !errors.As(err, &r) {
		if errors.Is(err, context.Canceled) {
			return "request cancelled"
		}
		return err.Error()
	}
	if _, ok := r.(*sentinel); ok || r.Fault().Kind == Internal {
		return err.Error()
	}
	return r.Error()
}

// New returns a sentinel error of the fault f, for errors.Is.
func New(message string, f Fault) error { return &sentinel{message, f} }

type sentinel struct {
	message string
	fault   Fault
}

func (e *sentinel) Error() string { return e.message }
func (e *sentinel) Fault() Fault  { return e.fault }

package access

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/nixery/nixery/internal/fault"
)

// Realm is the realm of the Basic authentication challenge.
const Realm = "Nixery"

// Guard is the HTTP side of access: Identify notes who sent each request,
// Require lets only authenticated users through. The zero value requires
// nothing and identifies clients by their connection's address.
type Guard struct {
	// Users, if set, are the accounts Require lets in.
	Users *Users
	// TrustProxy takes the client's address from the last entry of
	// X-Forwarded-For (set it only behind a reverse proxy that appends
	// the address it saw, or clients choose their own identity).
	TrustProxy bool
	// ClientCertificates lets through only requests whose connection
	// presented a client certificate that the TLS handshake verified
	// (NIXERY_TLS_CLIENT_CA), before and beside the Users' check. The
	// handshake itself checks the certificate against the CA: here it
	// only has to have been given, which leaves what is not behind
	// Require (the probes) open to clients without one.
	ClientCertificates bool
}

// ErrNoClientCertificate refuses a request without a client certificate
// when the server asks for one: 403, whatever credentials it sends.
var ErrNoClientCertificate = fault.New("a client certificate signed by this registry's client CA is required", fault.Fault{Kind: fault.Denied})

// Identify puts the client's address into the request context, for
// Client and for the build rate limit. It wraps the whole server.
func (g *Guard) Identify(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := client{ip: remoteIP(r, g.TrustProxy)}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), clientKey{}, c)))
	})
}

// DenyPlain answers a request that Require turned away in plain text:
// 401, or err's status (429 for a login refused unchecked, 403 without
// a client certificate).
func DenyPlain(w http.ResponseWriter, r *http.Request, err error) {
	if err != nil {
		status := fault.Of(err).Kind.Status()
		http.Error(w, strconv.Itoa(status)+" "+http.StatusText(status)+": "+err.Error(), status)
		return
	}
	http.Error(w, "401 Unauthorized: log in with a user of this Nixery", http.StatusUnauthorized)
}

// Require passes to next only requests with the credentials of one of
// g.Users (HTTP Basic, RFC 7617), with the user name as the client's
// identity. Other requests reach nothing behind the guard; deny answers
// them (nil: plain text): with err nil, 401 with the Basic challenge
// (set already); with err a *LoginLimitedError, 429 with Retry-After
// (set already): the login was refused unchecked; with err
// ErrNoClientCertificate, 403: ClientCertificates is set and the
// connection gave none. With no Users and no ClientCertificates, every
// request passes.
func (g *Guard) Require(next http.Handler, deny func(w http.ResponseWriter, r *http.Request, err error)) http.Handler {
	if g.Users == nil && !g.ClientCertificates {
		return next
	}
	if deny == nil {
		deny = DenyPlain
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.ClientCertificates && (r.TLS == nil || len(r.TLS.VerifiedChains) == 0) {
			deny(w, r, ErrNoClientCertificate)
			return
		}
		if g.Users == nil {
			next.ServeHTTP(w, r)
			return
		}
		user, password, ok := r.BasicAuth()
		if ok {
			// Another error (the file is unusable, the client gave up
			// while waiting) lets nobody in either.
			valid, err := g.Users.Verify(r.Context(), user, password)
			if valid {
				c := clientOf(r.Context())
				if c.ip == "" {
					c.ip = remoteIP(r, g.TrustProxy)
				}
				c.user = user
				next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), clientKey{}, c)))
				return
			}
			var limited *LoginLimitedError
			if errors.As(err, &limited) {
				w.Header().Set("Retry-After", strconv.Itoa(fault.Seconds(limited.RetryAfter)))
				deny(w, r, limited)
				return
			}
		}
		// https://datatracker.ietf.org/doc/html/rfc7617#section-2
		w.Header().Set("WWW-Authenticate", `Basic realm="`+Realm+`"`)
		deny(w, r, nil)
	})
}

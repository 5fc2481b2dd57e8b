// Package access decides who may use a Nixery and how fast: HTTP Basic
// authentication against an htpasswd file of bcrypt entries (a private
// instance), the identity of the client of each request, and per-client
// limits on how many new builds a client may start.
//
// The identity is the user name when the request was authenticated, else
// the client's IP address: the connection's, or the one a trusted reverse
// proxy put last into X-Forwarded-For. Handlers further down read it with
// Client; the build rate limit is kept per identity.
package access

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// clientKey is the context key of a request's client.
type clientKey struct{}

// client is who sent a request.
type client struct {
	user string // the authenticated user; "" if none
	ip   string // the remote address, without port
}

// Client returns who sent the request of ctx: the user name if it was
// authenticated, else the remote IP address ("" outside a request that
// went through Guard.Identify).
func Client(ctx context.Context) string {
	c, _ := ctx.Value(clientKey{}).(client)
	if c.user != "" {
		return c.user
	}
	return c.ip
}

func clientOf(ctx context.Context) client {
	c, _ := ctx.Value(clientKey{}).(client)
	return c
}

// remoteIP returns the client's address: the connection's peer, or with
// trustProxy the last address of X-Forwarded-For. Only the last one is
// the proxy's own: a client may send the header itself, and a proxy that
// appends (nginx's $proxy_add_x_forwarded_for, HAProxy's option forwardfor,
// most load balancers) keeps what the client sent in front.
func remoteIP(r *http.Request, trustProxy bool) string {
	if trustProxy {
		if values := r.Header.Values("X-Forwarded-For"); len(values) > 0 {
			parts := strings.Split(values[len(values)-1], ",")
			last := strings.TrimSpace(parts[len(parts)-1])
			if a, err := netip.ParseAddr(last); err == nil {
				return a.Unmap().String()
			}
			if ap, err := netip.ParseAddrPort(last); err == nil {
				return ap.Addr().Unmap().String()
			}
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap().String()
	}
	return host
}

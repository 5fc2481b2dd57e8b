// Package route carries the route of a request, a label from a fixed
// set, from the handler that serves the request to the middleware that
// observes it (the request log and the metrics of package metrics).
//
// The path of a request is parsed once, by the handler that serves it
// (the registry reads /v2/ paths from the end, the web dispatches on its
// own paths), and that handler names the route as it parses:
//
//	r, label := route.Track(r)   // the observer, before serving
//	next.ServeHTTP(w, r)
//	...label()...                // after serving: what the handler named
//
//	route.Name(r, route.V2Manifest) // the handler, as it dispatches
//
// So no observer parses a path, and the label of a request is always the
// route that answered it. Labels are values of this package only, so the
// number of metric series stays bounded whatever clients ask for.
package route

import (
	"context"
	"net/http"
)

// Label names a route in logs and metrics.
type Label struct{ name string }

func (l Label) String() string { return l.name }

// The routes. Web is also the label of a request no handler named: the
// server's mux answered it itself (a redirect to the cleaned path).
var (
	V2Base     = Label{"v2_base"}     // /v2/
	V2Manifest = Label{"v2_manifest"} // /v2/<name>/manifests/<reference>
	V2Blob     = Label{"v2_blob"}     // /v2/<name>/blobs/<digest>, and the upload paths under blobs/
	V2Other    = Label{"v2_other"}    // the rest of /v2/: tags, referrers, no such endpoint
	Web        = Label{"web"}         // the pages
	APISearch  = Label{"api_search"}  // /api/search
	APIEvents  = Label{"api_events"}  // /api/build/…: a build's event stream
	APIOther   = Label{"api_other"}   // the rest of /api/
	Metrics    = Label{"metrics"}     // /metrics
	Health     = Label{"health"}      // /healthz, /readyz
)

// All is every label, in a fixed order.
var All = []Label{V2Base, V2Manifest, V2Blob, V2Other, Web, APISearch, APIEvents, APIOther, Metrics, Health}

// record is where the handler's name of a request's route lands.
type record struct{ label Label }

type key struct{}

// Track returns r with room for its route's name, and a function that
// returns that name once r has been served (Web if none was given).
func Track(r *http.Request) (*http.Request, func() Label) {
	rec := &record{}
	r = r.WithContext(context.WithValue(r.Context(), key{}, rec))
	return r, func() Label {
		if rec.label == (Label{}) {
			return Web
		}
		return rec.label
	}
}

// Name names the route of r, if r is tracked. A route is named once:
// the first name stands, so a wrapper that knows the route of every
// path it is given (Named) names it before the handler it wraps.
func Name(r *http.Request, l Label) {
	if rec, ok := r.Context().Value(key{}).(*record); ok && rec.label == (Label{}) {
		rec.label = l
	}
}

// Named returns h with the route of its requests named l: for a handler
// that serves one route and does not name it (the metrics scrape, the
// probes).
func Named(l Label, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		Name(r, l)
		h.ServeHTTP(w, r)
	})
}

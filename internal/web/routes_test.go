package web

import (
	"net/http/httptest"
	"testing"

	"github.com/nixery/nixery/internal/route"
)

// TestRoutes: the route each path of the site is counted as, whether
// the site serves it or refuses it (access.Guard).
func TestRoutes(t *testing.T) {
	s := &Site{}
	for path, want := range map[string]route.Label{
		"/":                                route.Web,
		"/robots.txt":                      route.Web,
		"/search":                          route.Web,
		"/image/shell/hello":               route.Web,
		"/build/shell/hello":               route.Web,
		"/api/search":                      route.APISearch,
		"/builds":                          route.Web,
		"/api/builds":                      route.APIOther,
		"/api/build/shell/hello/events":    route.APIEvents,
		"/api/build/shell/hello":           route.APIEvents,
		"/api/image/hello":                 route.APIOther,
		"/api/nothing":                     route.APIOther,
		"/some/random/path/from/a/scanner": route.Web,
	} {
		if got, _ := s.route(path); got != want {
			t.Errorf("route(%q) = %v, want %v", path, got, want)
		}
		r, label := route.Track(httptest.NewRequest("GET", path, nil))
		s.Refused(httptest.NewRecorder(), r, nil)
		if got := label(); got != want {
			t.Errorf("Refused(%q) named %v, want %v", path, got, want)
		}
	}
}

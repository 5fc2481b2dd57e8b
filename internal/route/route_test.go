package route

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestTrack(t *testing.T) {
	serve := func(h http.Handler) Label {
		r, label := Track(httptest.NewRequest("GET", "/x", nil))
		h.ServeHTTP(httptest.NewRecorder(), r)
		return label()
	}
	nothing := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	names := func(l Label) http.Handler {
		return http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { Name(r, l) })
	}
	for _, tt := range []struct {
		what string
		h    http.Handler
		want Label
	}{
		{"unnamed: the mux's own answer", nothing, Web},
		{"named by the handler", names(V2Blob), V2Blob},
		{"named by a wrapper first", Named(Metrics, names(Web)), Metrics},
	} {
		if got := serve(tt.h); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.what, got, tt.want)
		}
	}
	// An untracked request (a handler used alone, in tests) is fine.
	Name(httptest.NewRequest("GET", "/x", nil), V2Base)
}

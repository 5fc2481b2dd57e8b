package metrics

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nixery/nixery/internal/route"
)

func TestInstrument(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewHTTP(reg)
	var logged strings.Builder
	log := slog.New(slog.NewTextHandler(&logged, nil))
	// The handler names the route of what it serves; a request it does
	// not name counts as web.
	h := Instrument(log, m, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v2/x/blobs/sha256:00":
			route.Name(r, route.V2Blob)
			io.Copy(w, strings.NewReader("twelve bytes")) // through ReadFrom
		case "/api/build/x/events":
			route.Name(r, route.APIEvents)
			w.Write([]byte("data: {}\n\n"))
			if err := http.NewResponseController(w).Flush(); err != nil {
				t.Errorf("flush through the recorder: %v", err)
			}
		default:
			http.NotFound(w, r)
		}
	}))
	for _, p := range []string{"/v2/x/blobs/sha256:00", "/api/build/x/events", "/nope"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", p, nil))
	}
	rec := httptest.NewRecorder()
	Handler(reg).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	out := rec.Body
	for _, want := range []string{
		`nixery_http_requests_total{code="2xx",route="v2_blob"} 1`,
		`nixery_http_requests_total{code="4xx",route="web"} 1`,
		`nixery_http_response_bytes_total{route="v2_blob"} 12`,
		`nixery_http_request_duration_seconds_bucket{route="api_events",le="+Inf"} 1`,
		`nixery_http_request_duration_seconds_count{route="web"} 1`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("metrics lack %s:\n%s", want, out.String())
		}
	}
	if !strings.Contains(logged.String(), "route=v2_blob path=/v2/x/blobs/sha256:00 status=200 bytes=12") {
		t.Errorf("request log: %s", logged.String())
	}
}

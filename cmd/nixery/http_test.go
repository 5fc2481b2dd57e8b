package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nixery/nixery/storage"
)

func TestRoute(t *testing.T) {
	for path, want := range map[string]string{
		"/v2/":                             "v2_base",
		"/v2":                              "v2_base",
		"/v2/shell/git/manifests/latest":   "v2_manifest",
		"/v2/a/b/c/blobs/sha256:0123":      "v2_blob",
		"/v2/_catalog":                     "v2_other",
		"/":                                "web",
		"/image/shell/hello":               "web",
		"/api/search":                      "api_search",
		"/api/build/shell/hello/events":    "api_events",
		"/api/image/hello":                 "api_other",
		"/metrics":                         "metrics",
		"/healthz":                         "health",
		"/readyz":                          "health",
		"/some/random/path/from/a/scanner": "web",
	} {
		if got := route(path); got != want {
			t.Errorf("route(%q) = %q, want %q", path, got, want)
		}
	}
}

func TestInstrument(t *testing.T) {
	m := &httpMetrics{}
	var logged strings.Builder
	log := slog.New(slog.NewTextHandler(&logged, nil))
	h := instrument(log, m, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v2/x/blobs/sha256:00":
			io.Copy(w, strings.NewReader("twelve bytes")) // through ReadFrom
		case "/api/build/x/events":
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
	var out strings.Builder
	m.write(&out)
	for _, want := range []string{
		`nixery_http_requests_total{route="v2_blob",code="2xx"} 1`,
		`nixery_http_requests_total{route="web",code="4xx"} 1`,
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

// brokenStore answers every object read with an outage.
type brokenStore struct{ storage.Backend }

func (brokenStore) GetObject(context.Context, string) ([]byte, error) {
	return nil, errors.New("connection refused")
}

func TestReadyz(t *testing.T) {
	fs, err := storage.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	healthy := &health{store: fs}
	rec := httptest.NewRecorder()
	healthy.healthz(rec, httptest.NewRequest("GET", "/healthz", nil))
	if rec.Code != 200 {
		t.Errorf("/healthz = %d", rec.Code)
	}
	broken := &health{store: brokenStore{fs}}
	rec = httptest.NewRecorder()
	broken.readyz(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "not ready") {
		t.Errorf("/readyz with broken storage = %d %s", rec.Code, rec.Body)
	}
	// The result is reused for a while: no new check.
	broken.checked = time.Now()
	broken.reason = "cached reason"
	rec = httptest.NewRecorder()
	broken.readyz(rec, httptest.NewRequest("GET", "/readyz", nil))
	if !strings.Contains(rec.Body.String(), "cached reason") {
		t.Errorf("/readyz did not reuse its result: %s", rec.Body)
	}
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nixery/nixery/builder"
	"github.com/nixery/nixery/nix"
	"github.com/nixery/nixery/storage"
)

// Routes are the fixed labels of requests in logs and metrics: never the
// raw path, so that the number of series stays bounded whatever clients
// ask for.
var routes = []string{"v2_base", "v2_manifest", "v2_blob", "v2_other", "web", "api_search", "api_events", "api_other", "metrics", "health"}

// route classifies a request path into one of routes. Registry paths are
// read from the end, as the registry reads them.
func route(path string) string {
	switch {
	case path == "/v2" || path == "/v2/":
		return "v2_base"
	case strings.HasPrefix(path, "/v2/"):
		rest := strings.TrimPrefix(path, "/v2/")
		switch {
		case strings.Contains(rest, "/manifests/"):
			return "v2_manifest"
		case strings.Contains(rest, "/blobs/"):
			return "v2_blob"
		}
		return "v2_other"
	case path == "/metrics":
		return "metrics"
	case path == "/healthz" || path == "/readyz":
		return "health"
	case path == "/api/search":
		return "api_search"
	case strings.HasPrefix(path, "/api/build/"):
		return "api_events"
	case strings.HasPrefix(path, "/api/"):
		return "api_other"
	}
	return "web"
}

// latencyBuckets are the upper bounds (seconds) of the request latency
// histogram: from a cached manifest (well under a millisecond) to a cold
// build (a minute or more).
var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}

// httpMetrics counts requests, bytes and latency by route (and status
// class for the counts).
type httpMetrics struct {
	mu     sync.Mutex
	routes map[string]*routeStats
}

type routeStats struct {
	requests [6]int64 // by status class: index 2 counts 2xx …
	bytes    int64
	buckets  []int64 // cumulative counts are computed when written
	sum      float64
	count    int64
}

func (m *httpMetrics) observe(route string, status int, bytes int64, d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.routes == nil {
		m.routes = map[string]*routeStats{}
	}
	rs := m.routes[route]
	if rs == nil {
		rs = &routeStats{buckets: make([]int64, len(latencyBuckets))}
		m.routes[route] = rs
	}
	if class := status / 100; class >= 1 && class <= 5 {
		rs.requests[class]++
	}
	rs.bytes += bytes
	secs := d.Seconds()
	for i, le := range latencyBuckets {
		if secs <= le {
			rs.buckets[i]++
			break
		}
	}
	rs.sum += secs
	rs.count++
}

// write writes the HTTP metrics in the Prometheus text format.
func (m *httpMetrics) write(w io.Writer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	fmt.Fprint(w, "# HELP nixery_http_requests_total HTTP requests by route and status class.\n# TYPE nixery_http_requests_total counter\n")
	for _, r := range routes {
		if rs := m.routes[r]; rs != nil {
			for class := 1; class <= 5; class++ {
				if n := rs.requests[class]; n > 0 {
					fmt.Fprintf(w, "nixery_http_requests_total{route=%q,code=\"%dxx\"} %d\n", r, class, n)
				}
			}
		}
	}
	fmt.Fprint(w, "# HELP nixery_http_response_bytes_total Bytes of response bodies served, by route.\n# TYPE nixery_http_response_bytes_total counter\n")
	for _, r := range routes {
		if rs := m.routes[r]; rs != nil {
			fmt.Fprintf(w, "nixery_http_response_bytes_total{route=%q} %d\n", r, rs.bytes)
		}
	}
	fmt.Fprint(w, "# HELP nixery_http_request_duration_seconds Time to answer a request, by route.\n# TYPE nixery_http_request_duration_seconds histogram\n")
	for _, r := range routes {
		rs := m.routes[r]
		if rs == nil {
			continue
		}
		var cum int64
		for i, le := range latencyBuckets {
			cum += rs.buckets[i]
			fmt.Fprintf(w, "nixery_http_request_duration_seconds_bucket{route=%q,le=\"%g\"} %d\n", r, le, cum)
		}
		fmt.Fprintf(w, "nixery_http_request_duration_seconds_bucket{route=%q,le=\"+Inf\"} %d\n", r, rs.count)
		fmt.Fprintf(w, "nixery_http_request_duration_seconds_sum{route=%q} %g\n", r, rs.sum)
		fmt.Fprintf(w, "nixery_http_request_duration_seconds_count{route=%q} %d\n", r, rs.count)
	}
}

// responseRecorder remembers the status and counts the body bytes of an
// answer, for the request log and the metrics. It keeps the abilities of
// the writer it wraps: sendfile for blobs (ReadFrom) and flushing for
// server-sent events (Unwrap, for http.ResponseController).
type responseRecorder struct {
	http.ResponseWriter
	status int
	bytes  atomic.Int64
}

func (r *responseRecorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
	r.ResponseWriter.WriteHeader(status)
}

func (r *responseRecorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(p)
	r.bytes.Add(int64(n))
	return n, err
}

// ReadFrom keeps sendfile for blobs served through the recorder.
func (r *responseRecorder) ReadFrom(src io.Reader) (int64, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := r.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(r.ResponseWriter, src)
	}
	r.bytes.Add(n)
	return n, err
}

func (r *responseRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (r *responseRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// instrument logs one line per request (method, route, path, status,
// bytes, duration) and feeds the HTTP metrics.
func instrument(log *slog.Logger, m *httpMetrics, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &responseRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		d := time.Since(start)
		status := rec.status
		if status == 0 {
			status = http.StatusOK
		}
		rt := route(r.URL.Path)
		m.observe(rt, status, rec.bytes.Load(), d)
		log.Info("request", "method", r.Method, "route", rt, "path", r.URL.Path, "status", status,
			"bytes", rec.bytes.Load(), "ms", float64(d.Microseconds())/1000)
	})
}

// metricsHandler serves /metrics: the builder's counters, then the HTTP
// ones.
func metricsHandler(b *builder.Builder, m *httpMetrics, gc *gcMetrics) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		b.WriteMetrics(w)
		b.Nix.WriteMetrics(w) // pushes to the Nix binary cache
		m.write(w)
		gc.write(w)
	})
}

// health answers /healthz (the process is alive and serving) and /readyz
// (it can build and serve images: Nix runs and storage answers).
type health struct {
	store storage.Backend

	mu      sync.Mutex
	checked time.Time
	reason  string // why not ready; "" if ready
}

// readyCache is how long a readiness result is reused, so that frequent
// probes do not start a Nix process each.
const readyCache = 5 * time.Second

func (h *health) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
}

func (h *health) readyz(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if time.Since(h.checked) > readyCache {
		h.reason = h.check(r.Context())
		h.checked = time.Now()
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if h.reason != "" {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "not ready: "+h.reason)
		return
	}
	fmt.Fprintln(w, "ready")
}

// check returns why the server is not ready, or "".
func (h *health) check(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := nix.Version(ctx); err != nil {
		return "nix is not usable: " + err.Error()
	}
	// A probe object that does not exist: ErrNotFound means storage
	// answered.
	if _, err := h.store.GetObject(ctx, "readyz-probe"); err != nil && !errors.Is(err, storage.ErrNotFound) {
		return "storage is not reachable: " + err.Error()
	}
	return ""
}

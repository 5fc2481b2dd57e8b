// Package metrics observes the HTTP side: one log line and the
// Prometheus metrics of every request (counts by route and status class,
// bytes, latency), labelled with the route that the handler which served
// the request named (package route: metrics never parse a path); and the registry
// that /metrics serves, which gathers the metrics of the other packages
// (the builder's, the package source's, the garbage collector's).
package metrics

import (
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/nixery/nixery/internal/builder"
	"github.com/nixery/nixery/internal/certs"
	"github.com/nixery/nixery/internal/nix"
	"github.com/nixery/nixery/internal/registry"
	"github.com/nixery/nixery/internal/route"
)

// latencyBuckets are the upper bounds (seconds) of the request latency
// histogram: from a cached manifest (well under a millisecond) to a cold
// build (a minute or more).
var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}

// HTTP counts requests (by route and status class), response bytes and
// latency (by route). Labels come from fixed sets only (route.All, five
// status classes), so the number of series is bounded whatever
// clients send.
type HTTP struct {
	requests *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// NewHTTP makes the HTTP metrics and registers them with reg (if not
// nil).
func NewHTTP(reg prometheus.Registerer) *HTTP {
	m := &HTTP{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixery_http_requests_total", Help: "HTTP requests by route and status class.",
		}, []string{"route", "code"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixery_http_response_bytes_total", Help: "Bytes of response bodies served, by route.",
		}, []string{"route"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "nixery_http_request_duration_seconds", Help: "Time to answer a request, by route.", Buckets: latencyBuckets,
		}, []string{"route"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.bytes, m.latency)
	}
	return m
}

func (m *HTTP) observe(route string, status int, bytes int64, d time.Duration) {
	class := "other"
	if c := status / 100; c >= 1 && c <= 5 {
		class = strconv.Itoa(c) + "xx"
	}
	m.requests.WithLabelValues(route, class).Inc()
	m.bytes.WithLabelValues(route).Add(float64(bytes))
	m.latency.WithLabelValues(route).Observe(d.Seconds())
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

// Instrument logs one line per request (method, route, path, status,
// bytes, duration) and feeds the HTTP metrics. The route is the one the
// handler that served the request named (route.Name). The path is cut as the
// registry's error lines cut it, so a line has a bounded length; slog
// quotes what is not printable, so no path can forge a line.
func Instrument(log *slog.Logger, m *HTTP, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &responseRecorder{ResponseWriter: w}
		r, label := route.Track(r)
		next.ServeHTTP(rec, r)
		d := time.Since(start)
		status := rec.status
		if status == 0 {
			status = http.StatusOK
		}
		rt := label().String()
		m.observe(rt, status, rec.bytes.Load(), d)
		log.Info("request", "method", r.Method, "route", rt, "path", registry.Cut(r.URL.Path, registry.MaxLoggedPath), "status", status,
			"bytes", rec.bytes.Load(), "ms", float64(d.Microseconds())/1000)
	})
}

// NewRegistry makes the registry /metrics serves: the builder's metrics
// and its pushes to the Nix binary cache, the others given (the package
// source's), Go runtime and process metrics (memory, goroutines, open
// files). NewHTTP and gc.NewMetrics add theirs to it. Nothing in
// it reads storage.
func NewRegistry(b *builder.Builder, others ...prometheus.Collector) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), b.Collector())
	reg.MustRegister(others...)
	// Pushes to the Nix binary cache (NIXERY_NIX_CACHE), read when scraped.
	for result, n := range map[string]func(nix.PushStats) int64{
		"succeeded": func(s nix.PushStats) int64 { return s.Succeeded },
		"failed":    func(s nix.PushStats) int64 { return s.Failed },
		"skipped":   func(s nix.PushStats) int64 { return s.Skipped },
	} {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "nixery_nix_cache_pushes_total", Help: "Closures pushed to the Nix binary cache (NIXERY_NIX_CACHE), by result.",
			ConstLabels: prometheus.Labels{"result": result},
		}, func() float64 { return float64(n(b.Nix.Pushes())) }))
	}
	return reg
}

// Certificate is the metrics of the TLS certificate a server presents
// (NIXERY_TLS_CERT), read when scraped: when it expires, and whether its
// files, as last read, are the pair in use. With p nil it has none.
func Certificate(p *certs.Pair) prometheus.Collector { return certCollector{p} }

var (
	descCertExpiry = prometheus.NewDesc("nixery_tls_certificate_expiry_timestamp_seconds",
		"When the TLS certificate served expires (Unix time).", nil, nil)
	descCertUnusable = prometheus.NewDesc("nixery_tls_certificate_files_unusable",
		"1 while the TLS certificate files, as last read, are not a usable pair (the one loaded before is served); else 0.", nil, nil)
)

type certCollector struct{ p *certs.Pair }

func (c certCollector) Describe(ch chan<- *prometheus.Desc) {
	if c.p != nil {
		ch <- descCertExpiry
		ch <- descCertUnusable
	}
}

func (c certCollector) Collect(ch chan<- prometheus.Metric) {
	if c.p == nil {
		return
	}
	unusable := 0.0
	if c.p.Problem() != nil {
		unusable = 1
	}
	ch <- prometheus.MustNewConstMetric(descCertExpiry, prometheus.GaugeValue, float64(c.p.Leaf().NotAfter.Unix()))
	ch <- prometheus.MustNewConstMetric(descCertUnusable, prometheus.GaugeValue, unusable)
}

// Handler serves /metrics in the Prometheus exposition format.
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/nixery/nixery/internal/builder"
	"github.com/nixery/nixery/internal/catalog"
	"github.com/nixery/nixery/internal/nix"
	"github.com/nixery/nixery/internal/registry"
	"github.com/nixery/nixery/internal/storage"
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

// registryPaths sends every path under /v2/ to v2 as it came, and the
// rest to mux. The mux answers a path with an empty, "." or ".." segment
// with a redirect (text/html) to its cleaned form, which is another
// repository: /v2/a/../shell/manifests/latest would build shell. Such a
// name matches no repository name of the distribution spec, and the
// registry answers it with NAME_INVALID.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pulling-manifests
func registryPaths(v2, mux http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v2/") {
			v2.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// latencyBuckets are the upper bounds (seconds) of the request latency
// histogram: from a cached manifest (well under a millisecond) to a cold
// build (a minute or more).
var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}

// httpMetrics counts requests (by route and status class), response
// bytes and latency (by route). Labels come from fixed sets only (routes,
// five status classes), so the number of series is bounded whatever
// clients send.
type httpMetrics struct {
	requests *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	m := &httpMetrics{
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

func (m *httpMetrics) observe(route string, status int, bytes int64, d time.Duration) {
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

// instrument logs one line per request (method, route, path, status,
// bytes, duration) and feeds the HTTP metrics. The path is cut as the
// registry's error lines cut it, so a line has a bounded length; slog
// quotes what is not printable, so no path can forge a line.
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
		log.Info("request", "method", r.Method, "route", rt, "path", registry.Cut(r.URL.Path, registry.MaxLoggedPath), "status", status,
			"bytes", rec.bytes.Load(), "ms", float64(d.Microseconds())/1000)
	})
}

// metrics makes the registry /metrics serves: the builder's, the HTTP
// and the collector's metrics, the others given (the package source's),
// Go runtime and process metrics (memory, goroutines, open files).
// Nothing in it reads storage.
func metrics(b *builder.Builder, others ...prometheus.Collector) (*prometheus.Registry, *httpMetrics, *gcMetrics) {
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
	return reg, newHTTPMetrics(reg), newGCMetrics(reg)
}

// metricsHandler serves /metrics in the Prometheus exposition format.
func metricsHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

// HTTP server limits (README, "For the people who run it").
const (
	// readHeaderTimeout bounds how long a client may take to send its
	// request line and headers (slow-loris clients).
	readHeaderTimeout = 10 * time.Second
	// idleTimeout closes keep-alive connections that carry no request
	// for this long, so idle clients do not hold connections forever.
	idleTimeout = 120 * time.Second
	// maxHeaderBytes bounds the request line and headers together, and
	// so the URL: registry paths and search queries are far shorter.
	// Larger requests get 431 Request Header Fields Too Large.
	maxHeaderBytes = 64 << 10
)

// Limits on each request that net/http's own timeouts cannot express
// (README, "For the people who run it"). Its ReadTimeout and WriteTimeout
// count from the start of a request, so they would end long blob
// downloads and build event streams; worse, an expired ReadTimeout
// cancels the context of a handler still at work. These limits count
// from the last progress instead.
const (
	// bodyTimeout bounds how long a client may take to send a request
	// body after its headers. No endpoint uses a body, but net/http
	// reads up to 256 KiB of an unread one before it answers, with no
	// deadline of its own: a client that declares a body and never sends
	// it would hold its connection and handler for ever.
	bodyTimeout = 10 * time.Second
	// maxBodyBytes is how much of a body is read (and dropped) so that
	// the connection can serve another request; with a larger body, or
	// one not sent within bodyTimeout, the request is answered as usual
	// and the connection closed.
	maxBodyBytes = 64 << 10
	// writeStall: an answer that makes no progress for this long (one
	// write of at most stallChunk bytes not taken by the client) is
	// abandoned and its connection closed, so a client that stops
	// reading a blob or an event stream does not hold them for ever. A
	// slow client that keeps reading is served to the end.
	// stallChunk is 1 MiB, not less: each chunk is one write (sendfile)
	// with its own deadline, and 64 KiB chunks served a 1 MB layer 20 %
	// slower (bash scripts/bench-blob, docs/measurements.md).
	writeStall = 60 * time.Second
	stallChunk = 1 << 20
)

// serverLimits are the limits above, for one server; zero fields take
// the defaults (tests shorten them).
type serverLimits struct {
	BodyTimeout time.Duration
	WriteStall  time.Duration
}

// newHTTPServer is the server serve runs, with the limits above.
func newHTTPServer(h http.Handler) *http.Server { return serverWith(h, serverLimits{}) }

// serverWith is the server with the limits above, l overriding them.
func serverWith(h http.Handler, l serverLimits) *http.Server {
	if l.BodyTimeout <= 0 {
		l.BodyTimeout = bodyTimeout
	}
	if l.WriteStall <= 0 {
		l.WriteStall = writeStall
	}
	return &http.Server{
		Handler:           l.wrap(h),
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
	}
}

// wrap applies the limits to every request next handles.
func (l serverLimits) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
			l.dropBody(w, r, rc)
		}
		// Each write sets its own deadline; none is left from the
		// previous request on this connection, and a handler may think
		// for minutes (a build) before it writes anything.
		rc.SetWriteDeadline(time.Time{})
		next.ServeHTTP(&stallWriter{ResponseWriter: w, rc: rc, stall: l.WriteStall}, r)
		// What the handler left buffered is sent after it returns.
		rc.SetWriteDeadline(time.Now().Add(l.WriteStall))
	})
}

// dropBody reads and drops the request body, within BodyTimeout and
// maxBodyBytes. A body that ended is replaced by an empty one and the
// read deadline lifted (net/http's background read for a client that
// goes away must not time out). Otherwise the deadline stays, so that
// whatever net/http still reads of the body is bounded too, and the
// connection is closed after the answer: the rest of the body must not
// be parsed as a request.
//
// A client that waits for 100 Continue (RFC 9110 §10.1.1) before it
// sends its body, as a push does, is not asked for it: it gets its
// answer (405) at once.
func (l serverLimits) dropBody(w http.ResponseWriter, r *http.Request, rc *http.ResponseController) {
	rc.SetReadDeadline(time.Now().Add(l.BodyTimeout))
	if strings.EqualFold(r.Header.Get("Expect"), "100-continue") {
		w.Header().Set("Connection", "close")
		return
	}
	n, err := io.Copy(io.Discard, io.LimitReader(r.Body, maxBodyBytes+1))
	if err == nil && n <= maxBodyBytes {
		rc.SetReadDeadline(time.Time{})
		r.Body = http.NoBody
		return
	}
	w.Header().Set("Connection", "close")
}

// stallWriter gives every write of an answer writeStall to complete: a
// write deadline set before each chunk of at most stallChunk bytes, and
// before each flush.
type stallWriter struct {
	http.ResponseWriter
	rc    *http.ResponseController
	stall time.Duration
}

func (s *stallWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		s.rc.SetWriteDeadline(time.Now().Add(s.stall))
		m, err := s.ResponseWriter.Write(p[:min(len(p), stallChunk)])
		n += m
		if err != nil {
			return n, err
		}
		p = p[m:]
	}
	return n, nil
}

// ReadFrom copies src in chunks, each with its deadline, through the
// wrapped writer's ReadFrom (which may use sendfile). http.ServeContent
// hands it an *io.LimitedReader; chunks of it stay one LimitedReader of
// the same source, as sendfile needs.
func (s *stallWriter) ReadFrom(src io.Reader) (int64, error) {
	rf, ok := s.ResponseWriter.(io.ReaderFrom)
	if !ok {
		return io.Copy(struct{ io.Writer }{s}, src)
	}
	inner, remain := src, int64(-1)
	if lr, ok := src.(*io.LimitedReader); ok {
		inner, remain = lr.R, lr.N
	}
	var total int64
	for remain != 0 {
		chunk := int64(stallChunk)
		if remain > 0 {
			chunk = min(chunk, remain)
		}
		s.rc.SetWriteDeadline(time.Now().Add(s.stall))
		n, err := rf.ReadFrom(&io.LimitedReader{R: inner, N: chunk})
		total += n
		if remain > 0 {
			remain -= n
		}
		if err != nil {
			return total, err
		}
		if n < chunk { // the source ended
			break
		}
	}
	if lr, ok := src.(*io.LimitedReader); ok {
		lr.N = remain
	}
	return total, nil
}

func (s *stallWriter) Flush() {
	s.rc.SetWriteDeadline(time.Now().Add(s.stall))
	s.rc.Flush()
}

func (s *stallWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// maxConnections is how many connections serve keeps open at once: half
// the file descriptors the process may open (a blob download takes two,
// its connection and the blob's file, and builds and storage need theirs),
// at most 16,384 (an idle connection costs tens of KiB). Go raises the
// soft limit to the hard one at start-up.
func maxConnections() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == 0 {
		return 512
	}
	return int(min(max(rl.Cur/2, 64), 16384))
}

// limitedListener bounds the connections open at once: with every slot
// taken, Accept waits for a connection to close, and new clients wait in
// the kernel's listen queue. Without a bound, a flood of connections
// takes every file descriptor, and then builds and storage fail too.
type limitedListener struct {
	net.Listener
	slots chan struct{}
	done  chan struct{}
	once  sync.Once
	// full, if set, is called when Accept has to wait for a slot
	// (tests).
	full func()
}

func limitConnections(ln net.Listener, n int) *limitedListener {
	return &limitedListener{Listener: ln, slots: make(chan struct{}, n), done: make(chan struct{})}
}

func (l *limitedListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	default:
		if l.full != nil {
			l.full()
		}
		select {
		case l.slots <- struct{}{}:
		case <-l.done:
			return nil, net.ErrClosed
		}
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitedConn{Conn: c, release: sync.OnceFunc(func() { <-l.slots })}, nil
}

func (l *limitedListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// limitedConn gives its slot back when closed (once, however often).
type limitedConn struct {
	net.Conn
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}

// ReadFrom and CloseWrite keep what net/http uses of a TCP connection:
// sendfile for blobs, and the half-close before closing after an error.
func (c *limitedConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Readiness checks (README, "For the people who run it").
const (
	// readyInterval is the pause between two background readiness
	// checks.
	readyInterval = 5 * time.Second
	// readyTimeout bounds one check (Nix's version, one storage read).
	readyTimeout = 10 * time.Second
	// readyStale: a result older than this means the checker is stuck,
	// which is reported as not ready.
	readyStale = 3 * (readyInterval + readyTimeout)
	// readyFirstWait is how long a probe that comes before the first
	// check has finished (just after start-up) waits for it.
	readyFirstWait = 2 * time.Second
	// defaultMinFree is the free space below which a disk counts as full:
	// the file system of the Nix store (a build writes its outputs there)
	// and that of filesystem storage (layers are written there).
	defaultMinFree = 1 << 30
	// nixStore is where Nix keeps store paths.
	nixStore = "/nix/store"
)

// health answers /healthz (the process is alive and serving) and /readyz
// (it can build and serve images: Nix runs, storage answers, the disks
// have room).
//
// Readiness is checked in the background by run, every readyInterval,
// each check with its own context and timeout. /readyz only reads the last
// result: a probe costs nothing, starts no process, and never uses its
// request's context, so a probe that is aborted cannot turn a healthy
// replica "not ready".
type health struct {
	store storage.Backend
	// draining is set on SIGTERM: the replica is not ready any more, so
	// that the load balancer stops sending it requests at once.
	draining atomic.Bool
	// disks are directories whose file systems need some bytes free.
	disks []disk
	// statfs returns the bytes available to Nixery on the file system
	// holding path (freeBytes; tests inject a full disk).
	statfs func(path string) (uint64, error)
	// private: the instance needs a login, but the probes do not, so
	// anyone who reaches the port may read /readyz. It then names only
	// the kind of problem ("storage is not reachable"); the details
	// (storage errors, paths, free space) are in the log.
	private bool
	// log gets each change of the result (nil: slog.Default()).
	log *slog.Logger

	mu      sync.Mutex
	checked time.Time     // of the last result; zero before the first
	reason  string        // why not ready; "" if ready
	kind    string        // the kind of reason, without details
	first   chan struct{} // closed when the first result is in
}

// firstResult returns a channel closed once the first result is in.
func (h *health) firstResult() chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.first == nil {
		h.first = make(chan struct{})
	}
	return h.first
}

func (h *health) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
}

func (h *health) readyz(w http.ResponseWriter, r *http.Request) {
	// Just after start-up, wait a little for the first result rather
	// than answer "not checked yet". The request's context only ends the
	// wait; it never reaches a check.
	select {
	case <-h.firstResult():
	default:
		t := time.NewTimer(readyFirstWait)
		select {
		case <-h.firstResult():
		case <-r.Context().Done():
		case <-t.C:
		}
		t.Stop()
	}
	reason := h.status(time.Now())
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if reason != "" {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "not ready: "+reason)
		return
	}
	fmt.Fprintln(w, "ready")
}

// status returns why the server is not ready at now, from the last check,
// as /readyz shows it.
func (h *health) status(now time.Time) string {
	if h.draining.Load() {
		return "shutting down"
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.checked.IsZero():
		return "starting: readiness not checked yet"
	case now.Sub(h.checked) > readyStale:
		return fmt.Sprintf("readiness last checked %s ago", now.Sub(h.checked).Round(time.Second))
	case h.private:
		return h.kind
	}
	return h.reason
}

// run checks readiness at once and then every readyInterval until ctx
// ends.
func (h *health) run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		h.update(ctx)
		t.Reset(readyInterval)
	}
}

// update runs one check and records its result, unless ctx ended meanwhile
// (shutting down is not a verdict on Nix or storage).
func (h *health) update(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	kind, reason := h.check(cctx)
	if ctx.Err() != nil {
		return
	}
	first := h.firstResult()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.checked.IsZero() {
		close(first)
	}
	if reason != h.reason {
		log := h.log
		if log == nil {
			log = slog.Default()
		}
		if reason != "" {
			log.Warn("not ready", "reason", reason)
		} else if !h.checked.IsZero() {
			log.Info("ready again")
		}
	}
	h.kind, h.reason, h.checked = kind, reason, time.Now()
}

// check returns why the server is not ready, or "": its kind, and the
// kind with the details.
func (h *health) check(ctx context.Context) (kind, reason string) {
	if _, err := nix.Version(ctx); err != nil {
		return "nix is not usable", "nix is not usable: " + err.Error()
	}
	// A read of an object that does not exist: "not found" means storage
	// answered.
	if err := catalog.New(h.store, nil).Probe(ctx); err != nil {
		return "storage is not reachable", "storage is not reachable: " + err.Error()
	}
	statfs := h.statfs
	if statfs == nil {
		statfs = freeBytes
	}
	for _, d := range h.disks {
		free, err := statfs(d.dir)
		if err != nil {
			return "free space unknown", fmt.Sprintf("free space of %s unknown: %v", d.dir, err)
		}
		if free < d.minFree {
			return "disk full", fmt.Sprintf("disk full: %s has %s free, less than %s", d.dir, mib(free), mib(d.minFree))
		}
	}
	return "", ""
}

// disk is a directory whose file system needs minFree bytes free.
type disk struct {
	dir     string
	minFree uint64
}

// disks are the file systems readiness watches: the Nix store's, and
// filesystem storage's (storageDir, or "" for a bucket). Each counts as
// full below defaultMinFree; the Nix store's below NIXERY_NIX_MIN_FREE
// if that is smaller: Nix collects garbage itself as it builds to keep
// that much free, so the operator has said that Nix may run so low.
func disks(nixMinFree int64, storageDir string) []disk {
	store := disk{nixStore, defaultMinFree}
	if nixMinFree > 0 && uint64(nixMinFree) < store.minFree {
		store.minFree = uint64(nixMinFree)
	}
	out := []disk{store}
	if storageDir != "" {
		out = append(out, disk{storageDir, defaultMinFree})
	}
	return out
}

// freeBytes is the space available to unprivileged writers on the file
// system holding path (statfs(2): available blocks × block size).
//
// A directory that does not exist yet (the Nix store of an empty /nix
// volume before the first build) is judged by the nearest one above it
// that does: that is where it will be made.
func freeBytes(path string) (uint64, error) {
	for {
		var st syscall.Statfs_t
		err := syscall.Statfs(path, &st)
		if err == nil {
			return st.Bavail * uint64(st.Bsize), nil
		}
		parent := filepath.Dir(path)
		if !errors.Is(err, syscall.ENOENT) || parent == path {
			return 0, err
		}
		path = parent
	}
}

func mib(n uint64) string { return fmt.Sprintf("%d MiB", n>>20) }

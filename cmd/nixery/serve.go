package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nixery/nixery/internal/access"
	"github.com/nixery/nixery/internal/certs"
	"github.com/nixery/nixery/internal/config"
	"github.com/nixery/nixery/internal/gc"
	"github.com/nixery/nixery/internal/metadata"
	"github.com/nixery/nixery/internal/metrics"
	"github.com/nixery/nixery/internal/nix"
	"github.com/nixery/nixery/internal/readiness"
	"github.com/nixery/nixery/internal/registry"
	"github.com/nixery/nixery/internal/route"
	"github.com/nixery/nixery/internal/search"
	"github.com/nixery/nixery/internal/server"
	"github.com/nixery/nixery/internal/storage"
	"github.com/nixery/nixery/internal/web"
)

// newHandler is the whole HTTP side: the registry API, the web pages and
// their APIs, metrics and probes. With users in guard, everything but the
// probes (and /metrics if metricsPublic) needs one of them: the registry
// answers refusals with its spec error body, the rest with a plain 401.
// Refused requests reach nothing, so they start no build. Each handler
// names the route of what it serves (route.Name), refusals included, for
// the request log and the metrics.
func newHandler(guard *access.Guard, metricsPublic bool, reg *registry.Registry, site, scrape http.Handler, probes *readiness.Checker) http.Handler {
	mux := http.NewServeMux()
	v2 := guard.Require(reg, reg.Refused)
	mux.Handle("/v2/", v2)
	var refused func(http.ResponseWriter, *http.Request, error) // plain text
	if s, ok := site.(interface {
		Refused(http.ResponseWriter, *http.Request, error)
	}); ok {
		refused = s.Refused // web.Site: plain text too, counted with its route
	}
	pages := guard.Require(site, refused)
	mux.Handle("/", pages)
	if !metricsPublic {
		scrape = guard.Require(scrape, nil)
	}
	mux.Handle("GET /metrics", route.Named(route.Metrics, scrape))
	// Probes stay open: load balancers and orchestrators send no
	// credentials, and they tell nothing about the images.
	mux.Handle("GET /healthz", route.Named(route.Health, http.HandlerFunc(probes.Healthz)))
	mux.Handle("GET /readyz", route.Named(route.Health, http.HandlerFunc(probes.Readyz)))
	// Other methods there are the site's (405), counted with their path.
	mux.Handle("/metrics", route.Named(route.Metrics, pages))
	mux.Handle("/healthz", route.Named(route.Health, pages))
	mux.Handle("/readyz", route.Named(route.Health, pages))
	return guard.Identify(registryPaths(v2, mux))
}

// registryPaths sends every path under /v2/ to v2 as it came, and the
// rest to mux. The mux answers a path with an empty, "." or ".." segment
// with a redirect (text/html) to its cleaned form, which is another
// repository: /v2/a/../shell/manifests/latest would build shell. Such a
// name matches no repository name of the distribution spec, and the
// registry answers it with NAME_INVALID. The mux redirects /v2 to /v2/,
// the base of the API, and the request counts as that.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pulling-manifests
func registryPaths(v2, mux http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v2/") {
			v2.ServeHTTP(w, r)
			return
		}
		if r.URL.Path == "/v2" {
			route.Name(r, route.V2Base)
		}
		mux.ServeHTTP(w, r)
	})
}

func serve(args []string) error {
	cfg, err := config.Load(args, os.Getenv)
	if err != nil {
		return fmt.Errorf("configuration: %w (see nixery --help)", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	slog.SetDefault(log)
	guard := &access.Guard{TrustProxy: cfg.TrustProxy}
	if cfg.Htpasswd != "" {
		users, err := access.LoadHtpasswd(cfg.Htpasswd)
		if err != nil {
			return fmt.Errorf("NIXERY_HTPASSWD / --htpasswd: %w", err)
		}
		users.Logger = log
		guard.Users = users
	}
	pair, tlsConfig, err := loadTLS(cfg, guard, log)
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	p, err := wire(ctx, cfg, log)
	if err != nil {
		return err
	}
	source, store, builder := p.source, p.store, p.builder
	// Work of serve's own beside the requests: stopped and waited for
	// when serve returns.
	bg, stopBackground := context.WithCancel(ctx)
	var background sync.WaitGroup
	defer func() {
		stopBackground()
		background.Wait()
	}()
	background.Go(func() { deleteTemporaries(bg, store, log) })
	if pair != nil {
		background.Go(func() { pair.Run(bg, cfg.TLSReload) })
	}
	// Store paths that killed Nixery processes of this machine still
	// held with their temporary roots go back to Nix's garbage collection.
	if err := nix.PrepareRoots(); err != nil {
		log.Error("builds will fail: cannot make their Nix garbage-collector roots", "err", err)
	}
	// The source's revision and whether Nix can evaluate it, found in
	// the background: at once, then every NIXERY_SOURCE_CHECK_INTERVAL.
	background.Go(func() { p.sourceHealth.Run(bg) })
	packages := &search.Searcher{Nix: builder.Nix, Source: source, Metadata: builder.Metadata(), Health: p.sourceHealth, Logger: log}
	packages.Preload(ctx) // the package list for search, made once per package set
	// An unknown package's error names close ones from that list, once it
	// is in memory (never waiting for it, never running Nix for it).
	builder.Suggest = packages.Suggest
	site := &web.Site{Builder: builder, Version: version, Logger: log, TrustProxy: cfg.TrustProxy, SourceHealth: p.sourceHealth, Search: packages, Artifacts: p.artifacts}
	builder.Admit = (&access.BuildLimiter{PerMinute: cfg.BuildRate, Burst: cfg.BuildBurst}).Admit
	promRegistry := metrics.NewRegistry(builder, p.sourceHealth.Collector(), metrics.Certificate(pair))
	httpStats, gcStats := metrics.NewHTTP(promRegistry), gc.NewMetrics(promRegistry)
	storageDir := ""
	if _, ok := store.(*storage.Filesystem); ok {
		storageDir = cfg.StoragePath
	}
	probes := &readiness.Checker{Store: store, Disks: readiness.Disks(cfg.NixMinFree, storageDir),
		Private: guard.Users != nil || guard.ClientCertificates, Logger: log, TLS: pair}
	background.Go(func() { probes.Run(bg) })
	handler := newHandler(guard, cfg.MetricsPublic,
		&registry.Registry{Builder: builder, Storage: store, Logger: log, Uses: builder.Metadata(), Referrers: p.artifacts}, site,
		metrics.Handler(promRegistry), probes)

	addr := net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port))
	tcp, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	conns := server.MaxConnections()
	ln := server.LimitConnections(tcp, conns)
	srv := server.New(metrics.Instrument(log, httpStats, handler))
	// What net/http itself reports (a failed Accept, a handler's panic)
	// goes to the same log as everything else.
	srv.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	srv.TLSConfig = tlsConfig
	var who []string // who gets in on a private instance
	if guard.Users != nil {
		who = append(who, "users of "+guard.Users.Path())
	}
	if guard.ClientCertificates {
		who = append(who, "client certificates of "+cfg.TLSClientCA)
	}
	private := "no (public)"
	if len(who) > 0 {
		private = "yes, " + strings.Join(who, " with ")
	}
	scheme := "http"
	if tlsConfig != nil {
		scheme = "https"
	}
	log.Info("nixery serving", "version", version, "address", ln.Addr().String(), "scheme", scheme, "source", source.String(),
		"storage", store.String(), "nix", p.nixVersion, "nix_timeout", cfg.NixTimeout, "private", private, "max_connections", conns)

	if cfg.GCInterval > 0 {
		collector := &gc.Collector{
			Metadata: builder.Metadata(), Interval: cfg.GCInterval,
			Options: gc.Options{MaxAge: cfg.GCMaxAge},
			Report: func(rep gc.Report, err error) {
				gcStats.Observe(rep, err)
				if err != nil {
					log.Error("garbage collection failed", "err", err)
					return
				}
				log.Info("garbage collection", "max_age", cfg.GCMaxAge, "report", rep.String())
			},
		}
		background.Go(func() { collector.Run(bg) })
	}

	errc := make(chan error, 1)
	go func() {
		if tlsConfig != nil {
			errc <- srv.ServeTLS(ln, "", "") // the certificate from tlsConfig
			return
		}
		errc <- srv.Serve(ln)
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	// Graceful scale-in: not ready at once (the load balancer drains this
	// replica), no new builds, the running ones may finish; requests keep
	// being served meanwhile. Builds still running after the timeout are
	// taken over by other replicas when their leases lapse.
	log.Info("shutting down: draining", "timeout", cfg.DrainTimeout)
	probes.Drain()
	drainCtx, cancelDrain := context.WithTimeout(context.Background(), cfg.DrainTimeout)
	if err := builder.Drain(drainCtx); err != nil {
		log.Warn("builds still running at shutdown; other replicas take them over", "err", err)
	}
	// Closures still being pushed to the Nix binary cache, in the same time.
	if err := builder.Nix.WaitPushes(drainCtx); err != nil {
		log.Warn("pushes to the Nix cache still running at shutdown; their paths are pushed by the next build of them", "err", err)
	}
	cancelDrain()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// loadTLS reads the TLS settings: with NIXERY_TLS_CERT, the pair to
// present (read again every NIXERY_TLS_RELOAD_INTERVAL by the caller) and
// the server's TLS configuration; with NIXERY_TLS_CLIENT_CA, guard
// requires client certificates too. Without NIXERY_TLS_CERT, all nil:
// plain HTTP.
//
// Without NIXERY_TLS_PROBES_PUBLIC the handshake itself requires the
// client certificate, so that a client without one reaches nothing, not
// even the HTTP parser. With it, the handshake verifies a certificate
// that is given (a wrong one fails it) and the guard refuses requests
// without one (403 DENIED from the registry), but the probes.
func loadTLS(cfg *config.Config, guard *access.Guard, log *slog.Logger) (*certs.Pair, *tls.Config, error) {
	if cfg.TLSCert == "" {
		return nil, nil, nil
	}
	pair, err := certs.Load(cfg.TLSCert, cfg.TLSKey, log)
	if err != nil {
		return nil, nil, fmt.Errorf("NIXERY_TLS_CERT / --tls-cert, NIXERY_TLS_KEY / --tls-key: %w", err)
	}
	if end := pair.Leaf().NotAfter; time.Now().After(end) {
		log.Error("the TLS certificate has expired: /readyz answers 503 until it is renewed", "certificate", cfg.TLSCert, "expired", end)
	}
	if cfg.TLSClientCA == "" {
		return pair, pair.ServerConfig(nil, false), nil
	}
	pool, err := certs.Bundle(cfg.TLSClientCA)
	if err != nil {
		return nil, nil, fmt.Errorf("NIXERY_TLS_CLIENT_CA / --tls-client-ca: %w", err)
	}
	guard.ClientCertificates = true
	return pair, pair.ServerConfig(pool, !cfg.TLSProbesPublic), nil
}

// deleteTemporaries removes the uploads that processes which died left in
// storage more than storage.AbandonedAfter ago; younger ones may belong to
// another replica or `nixery gc`/`build --local` at work. It runs once at
// start-up, in the background so that a slow or unreachable bucket does
// not delay serving; a failure is only logged (gc tries again).
func deleteTemporaries(ctx context.Context, store storage.Backend, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	n, err := metadata.New(store, log).DeleteAbandonedUploads(ctx)
	if err != nil {
		log.Warn("removing abandoned uploads", "storage", store.String(), "removed", n, "err", err)
		return
	}
	if n > 0 {
		log.Info("removed abandoned uploads", "storage", store.String(), "removed", n, "older_than", storage.AbandonedAfter)
	}
}

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nixery/nixery/internal/catalog"
	"github.com/nixery/nixery/internal/config"
)

// defaultGCAge keeps images used within the last 30 days.
const defaultGCAge = 30 * 24 * time.Hour

const minGCAge = config.MinGCAge

// gcCmd is `nixery gc [--max-age D] [--dry-run] [storage flags]`: it
// deletes blobs and cache entries that no image used within the age
// references, in whichever backend the configuration names.
func gcCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("nixery gc", flag.ContinueOnError)
	fs.SetOutput(stderr)
	maxAge := fs.Duration("max-age", defaultGCAge, fmt.Sprintf("delete images nobody built or pulled within this age (at least %s: pulls record their use hourly)", minGCAge))
	dryRun := fs.Bool("dry-run", false, "write nothing at all; report what would be deleted")
	load := config.Settings(fs, os.Getenv)
	fs.Usage = func() {
		fmt.Fprintf(stdout, `Usage: nixery gc [--max-age DURATION] [--dry-run] [flags of serve]

Deletes the images (manifest cache entries) that nobody built or pulled, by
name or by digest, within --max-age (default %s), then every blob and
object that no remaining image, no build in progress and no upload younger
than an hour refers to. Safe while servers and replicas serve and build on
the same storage, and while another gc runs; see docs/storage.md.
It waits a few minutes between deleting images and deleting their blobs,
so that running servers drop those images from memory first.
With --dry-run nothing at all is written and the report says what would be
deleted. Storage is configured as for serve, by the same flags and
environment variables:

`, defaultGCAge)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "nixery gc: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *maxAge < minGCAge {
		fmt.Fprintf(stderr, "nixery gc: --max-age must be at least %s: pulls record their use hourly\n", minGCAge)
		return 2
	}
	cfg, err := load()
	if err != nil {
		fmt.Fprintf(stderr, "nixery gc: configuration: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	store, err := openStorage(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "nixery gc: %v\n", err)
		return 1
	}
	rep, err := catalog.New(store, nil).GC(ctx, catalog.GCOptions{MaxAge: *maxAge, DryRun: *dryRun})
	if err != nil {
		fmt.Fprintf(stderr, "nixery gc: %s: %v\n", store, err)
		return 1
	}
	what := "deleted"
	if *dryRun {
		what = "would delete (dry run)"
	}
	fmt.Fprintf(stdout, "%s, images unused for %s: %s\n", store, *maxAge, what)
	fmt.Fprintln(stdout, rep)
	return 0
}

// gcMetrics counts what the in-process collector (NIXERY_GC_INTERVAL) did.
type gcMetrics struct {
	runs        *prometheus.CounterVec
	deleted     *prometheus.CounterVec
	lastSuccess prometheus.Gauge
	duration    prometheus.Gauge
}

func newGCMetrics(reg prometheus.Registerer) *gcMetrics {
	m := &gcMetrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixery_gc_runs_total", Help: "In-process garbage collections by result.",
		}, []string{"result"}),
		deleted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixery_gc_deleted_total", Help: "What in-process collections deleted, by kind: images, blobs, bytes (of blobs), objects (layer cache entries, details, use records, package lists, leases).",
		}, []string{"kind"}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nixery_gc_last_success_timestamp_seconds", Help: "When this replica last finished a collection.",
		}),
		duration: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nixery_gc_last_duration_seconds", Help: "How long that collection took.",
		}),
	}
	for _, r := range []string{"succeeded", "failed"} {
		m.runs.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.runs, m.deleted, m.lastSuccess, m.duration)
	}
	return m
}

func (m *gcMetrics) observe(rep catalog.GCReport, err error) {
	if err != nil {
		m.runs.WithLabelValues("failed").Inc()
		return
	}
	m.runs.WithLabelValues("succeeded").Inc()
	m.deleted.WithLabelValues("images").Add(float64(rep.ImagesDeleted))
	m.deleted.WithLabelValues("blobs").Add(float64(rep.BlobsDeleted))
	m.deleted.WithLabelValues("bytes").Add(float64(rep.BytesDeleted))
	m.deleted.WithLabelValues("objects").Add(float64(rep.ObjectsDeleted))
	m.lastSuccess.SetToCurrentTime()
	m.duration.Set(rep.Duration.Seconds())
}

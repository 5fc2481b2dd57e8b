package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nixery/nixery/catalog"
	"github.com/nixery/nixery/config"
)

// defaultGCAge keeps images used within the last 30 days.
const defaultGCAge = 30 * 24 * time.Hour

const minGCAge = config.MinGCAge

// gcCmd is `nixery gc [--max-age D] [--dry-run] [storage flags]`: it
// deletes blobs and cache entries that no image used within the age
// references, in whichever backend the configuration names.
func gcCmd(args []string, stdout, stderr io.Writer) int {
	maxAge, dryRun := defaultGCAge, false
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		switch {
		case !strings.HasPrefix(a, "-"):
			rest = append(rest, a)
		case name == "dry-run":
			dryRun = !hasValue || value == "true"
		case name == "max-age":
			if !hasValue {
				if i+1 == len(args) {
					fmt.Fprintln(stderr, "nixery gc: --max-age needs a duration, e.g. 720h")
					return 2
				}
				i++
				value = args[i]
			}
			d, err := time.ParseDuration(value)
			if err != nil || d < 0 {
				fmt.Fprintf(stderr, "nixery gc: --max-age must be a duration such as 720h or 30m, not %q\n", value)
				return 2
			}
			if d < minGCAge {
				fmt.Fprintf(stderr, "nixery gc: --max-age must be at least %s: pulls record their use hourly\n", minGCAge)
				return 2
			}
			maxAge = d
		case name == "h" || name == "help":
			fmt.Fprintf(stdout, `Usage: nixery gc [--max-age DURATION] [--dry-run] [storage flags of serve]

Deletes the images (manifest cache entries) that nobody built or pulled, by
name or by digest, within --max-age (default %s), then every blob and
object that no remaining image, no build in progress and no upload younger
than an hour refers to. Safe while servers and replicas serve and build on
the same storage, and while another gc runs; see docs/storage.md.
It waits a few minutes between deleting images and deleting their blobs,
so that running servers drop those images from memory first.
With --dry-run nothing at all is written and the report says what would be
deleted.
Storage is configured as for serve (NIXERY_STORAGE_BACKEND, STORAGE_PATH,
GCS_BUCKET, NIXERY_S3_BUCKET, …).
`, defaultGCAge)
			return 0
		default:
			rest = append(rest, a)
		}
	}
	cfg, err := config.Load(rest, os.Getenv)
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
	rep, err := catalog.New(store, nil).GC(ctx, catalog.GCOptions{MaxAge: maxAge, DryRun: dryRun})
	if err != nil {
		fmt.Fprintf(stderr, "nixery gc: %s: %v\n", store, err)
		return 1
	}
	what := "deleted"
	if dryRun {
		what = "would delete (dry run)"
	}
	fmt.Fprintf(stdout, "%s, images unused for %s: %s\n", store, maxAge, what)
	fmt.Fprintln(stdout, rep)
	return 0
}

// gcMetrics counts what the in-process collector (NIXERY_GC_INTERVAL) did.
type gcMetrics struct {
	mu                        sync.Mutex
	ok, failed                int64
	images, blobs, objects    int64
	bytes                     int64
	lastSuccess, lastDuration float64
}

func (m *gcMetrics) observe(rep catalog.GCReport, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		m.failed++
		return
	}
	m.ok++
	m.images += int64(rep.ImagesDeleted)
	m.blobs += int64(rep.BlobsDeleted)
	m.objects += int64(rep.ObjectsDeleted)
	m.bytes += rep.BytesDeleted
	m.lastSuccess = float64(time.Now().Unix())
	m.lastDuration = rep.Duration.Seconds()
}

// write writes the collector's metrics in the Prometheus text format.
func (m *gcMetrics) write(w io.Writer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	fmt.Fprintf(w, "# HELP nixery_gc_runs_total In-process garbage collections by result.\n# TYPE nixery_gc_runs_total counter\nnixery_gc_runs_total{result=\"succeeded\"} %d\nnixery_gc_runs_total{result=\"failed\"} %d\n", m.ok, m.failed)
	for _, c := range []struct {
		name, help string
		v          int64
	}{
		{"nixery_gc_deleted_images_total", "Images (manifest cache entries) deleted by in-process collections.", m.images},
		{"nixery_gc_deleted_blobs_total", "Blobs deleted by in-process collections.", m.blobs},
		{"nixery_gc_deleted_bytes_total", "Bytes of blobs deleted by in-process collections.", m.bytes},
		{"nixery_gc_deleted_objects_total", "Other objects (layer cache entries, details, use records, package lists, leases) deleted by in-process collections.", m.objects},
	} {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n%s %d\n", c.name, c.help, c.name, c.name, c.v)
	}
	fmt.Fprintf(w, "# HELP nixery_gc_last_success_timestamp_seconds When this replica last finished a collection.\n# TYPE nixery_gc_last_success_timestamp_seconds gauge\nnixery_gc_last_success_timestamp_seconds %g\n", m.lastSuccess)
	fmt.Fprintf(w, "# HELP nixery_gc_last_duration_seconds How long that collection took.\n# TYPE nixery_gc_last_duration_seconds gauge\nnixery_gc_last_duration_seconds %g\n", m.lastDuration)
}

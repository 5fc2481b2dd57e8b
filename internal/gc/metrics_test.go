package gc

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func TestGCMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	scrape := func() string {
		rec := httptest.NewRecorder()
		promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return rec.Body.String()
	}
	for _, want := range []string{`nixery_gc_runs_total{result="failed"} 0`, `nixery_gc_runs_total{result="succeeded"} 0`} {
		if out := scrape(); !strings.Contains(out, want) {
			t.Errorf("before any run, the metrics lack %s:\n%s", want, out)
		}
	}
	m.Observe(Report{}, errors.New("storage is down"))
	m.Observe(Report{ImagesDeleted: 2, BlobsDeleted: 5, BytesDeleted: 4096, ObjectsDeleted: 7, Duration: 1500 * time.Millisecond}, nil)
	out := scrape()
	for _, want := range []string{
		`nixery_gc_runs_total{result="failed"} 1`,
		`nixery_gc_runs_total{result="succeeded"} 1`,
		`nixery_gc_deleted_total{kind="images"} 2`,
		`nixery_gc_deleted_total{kind="blobs"} 5`,
		`nixery_gc_deleted_total{kind="bytes"} 4096`,
		`nixery_gc_deleted_total{kind="objects"} 7`,
		`nixery_gc_last_duration_seconds 1.5`,
		`nixery_gc_last_success_timestamp_seconds `,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %s:\n%s", want, out)
		}
	}
}

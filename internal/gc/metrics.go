package gc

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts what the in-process Collector (NIXERY_GC_INTERVAL)
// did: pass Observe as (or call it from) its Report.
type Metrics struct {
	runs        *prometheus.CounterVec
	deleted     *prometheus.CounterVec
	lastSuccess prometheus.Gauge
	duration    prometheus.Gauge
}

// NewMetrics makes the metrics and registers them with reg (if not
// nil). Both results of runs are there from the start, at zero.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
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

// Observe counts one run: its report, or its failure.
func (m *Metrics) Observe(rep Report, err error) {
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

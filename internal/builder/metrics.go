package builder

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports the builder's counters and gauges to Prometheus. It
// reads only memory (the counters and the queue), never storage, so a
// scrape is cheap whatever the state of the bucket.
func (b *Builder) Collector() prometheus.Collector { return (*collector)(b) }

type collector Builder

var (
	descCacheHits    = prometheus.NewDesc("nixery_manifest_cache_hits_total", "Manifest requests answered from the manifest cache.", nil, nil)
	descCacheMisses  = prometheus.NewDesc("nixery_manifest_cache_misses_total", "Manifest requests that needed a build.", nil, nil)
	descNixBuilds    = prometheus.NewDesc("nixery_nix_builds_total", "Builds that ran Nix.", nil, nil)
	descEvaluations  = prometheus.NewDesc("nixery_nix_evaluations_total", "Evaluations of the package set: one per batch of new images that share it, or per build that evaluates alone (builds of packages resolved before run none).", nil, nil)
	descReevaluated  = prometheus.NewDesc("nixery_nix_reevaluations_total", "Builds whose packages were known (resolved before, or by a shared evaluation) but could not be realised, and were evaluated again.", nil, nil)
	descBuilds       = prometheus.NewDesc("nixery_builds_total", "Builds by result: succeeded, failed, or rejected because the queue was full.", []string{"result"}, nil)
	descLayers       = prometheus.NewDesc("nixery_layers_total", "Layers of builds by origin: reused from the layer cache, or packed and uploaded.", []string{"origin"}, nil)
	descBuildsActive = prometheus.NewDesc("nixery_builds_running", "Builds running now.", nil, nil)
	descBuildsQueued = prometheus.NewDesc("nixery_builds_queued", "Builds waiting for a slot.", nil, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCacheHits, descCacheMisses, descNixBuilds, descEvaluations, descReevaluated, descBuilds, descLayers, descBuildsActive, descBuildsQueued} {
		ch <- d
	}
	(*Builder)(c).phaseHistogram().Describe(ch)
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	b := (*Builder)(c)
	s := &b.stats
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(descCacheHits, s.CacheHits.Load())
	counter(descCacheMisses, s.CacheMisses.Load())
	counter(descNixBuilds, s.NixBuilds.Load())
	counter(descEvaluations, s.Evaluations.Load())
	counter(descReevaluated, s.Reevaluated.Load())
	counter(descBuilds, s.BuildsOK.Load(), "succeeded")
	counter(descBuilds, s.BuildsError.Load(), "failed")
	counter(descBuilds, s.Rejected.Load(), "rejected")
	counter(descLayers, s.LayersReused.Load(), "reused")
	counter(descLayers, s.LayersPacked.Load(), "packed")
	running, waiting := b.Queue()
	ch <- prometheus.MustNewConstMetric(descBuildsActive, prometheus.GaugeValue, float64(running))
	ch <- prometheus.MustNewConstMetric(descBuildsQueued, prometheus.GaugeValue, float64(waiting))
	b.phaseHistogram().Collect(ch)
}

// phaseBuckets are the upper bounds (seconds) of the phase histogram:
// from a cached layer set (milliseconds) to a long Nix build.
var phaseBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// phaseHistogram is the time of each build phase, made on first use.
func (b *Builder) phaseHistogram() *prometheus.HistogramVec {
	b.phaseOnce.Do(func() {
		b.phaseHist = prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nixery_build_phase_seconds",
			Help:    "Time spent in each phase of builds (realise, graph, layers, pack, manifest).",
			Buckets: phaseBuckets,
		}, []string{"phase"})
		for _, p := range Phases {
			b.phaseHist.WithLabelValues(p) // every phase shows, observed or not
		}
	})
	return b.phaseHist
}

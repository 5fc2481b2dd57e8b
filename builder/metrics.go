package builder

import (
	"fmt"
	"io"
)

// WriteMetrics writes the builder's counters in the Prometheus text
// exposition format.
func (b *Builder) WriteMetrics(w io.Writer) {
	running, waiting := b.Queue()
	s := &b.stats
	for _, m := range []struct {
		name, help, kind string
		value            int64
	}{
		{"nixery_manifest_cache_hits_total", "Manifest requests answered from the manifest cache.", "counter", s.CacheHits.Load()},
		{"nixery_manifest_cache_misses_total", "Manifest requests that needed a build.", "counter", s.CacheMisses.Load()},
		{"nixery_nix_builds_total", "Builds that ran Nix.", "counter", s.NixBuilds.Load()},
		{"nixery_builds_succeeded_total", "Builds that produced an image.", "counter", s.BuildsOK.Load()},
		{"nixery_builds_failed_total", "Builds that failed.", "counter", s.BuildsError.Load()},
		{"nixery_builds_rejected_total", "Build requests refused because the queue was full.", "counter", s.Rejected.Load()},
		{"nixery_layers_reused_total", "Layers found in the layer cache.", "counter", s.LayersReused.Load()},
		{"nixery_layers_packed_total", "Layers packed and uploaded.", "counter", s.LayersPacked.Load()},
		{"nixery_builds_running", "Builds running now.", "gauge", int64(running)},
		{"nixery_builds_queued", "Builds waiting for a slot.", "gauge", int64(waiting)},
	} {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s %d\n", m.name, m.help, m.name, m.kind, m.name, m.value)
	}
	// The same outcomes as one labelled family, for dashboards that sum
	// or divide them (error rate = failed / all).
	fmt.Fprintf(w, "# HELP nixery_builds_total Builds by result.\n# TYPE nixery_builds_total counter\n")
	for _, r := range []struct {
		result string
		value  int64
	}{{"succeeded", s.BuildsOK.Load()}, {"failed", s.BuildsError.Load()}, {"rejected", s.Rejected.Load()}} {
		fmt.Fprintf(w, "nixery_builds_total{result=%q} %d\n", r.result, r.value)
	}
	fmt.Fprintf(w, "# HELP nixery_build_phase_seconds Time spent in each phase of builds.\n# TYPE nixery_build_phase_seconds summary\n")
	phases := b.PhaseStats()
	for _, name := range Phases {
		ps := phases[name]
		fmt.Fprintf(w, "nixery_build_phase_seconds_sum{phase=%q} %g\nnixery_build_phase_seconds_count{phase=%q} %d\n", name, ps.Seconds, name, ps.Count)
	}
}

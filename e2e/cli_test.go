package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// `nixery build` against the running server: progress in plain lines
// (stdout is not a terminal), phases in order, then the pull command.
func TestCLIBuild(t *testing.T) {
	needServer(t)
	cmd := exec.Command(bin, "build", "--server", "http://"+server.addr, "shell/jq")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("nixery build: %v\n%s", err, out)
	}
	text := string(out)
	last := -1
	for _, phase := range []string{"queued", "phase realise", "phase graph", "phase layers", "phase pack", "  packed ", " MiB in ", "phase manifest", "done", "image ready: shell/jq (sha256:", "docker pull " + server.addr + "/shell/jq"} {
		i := strings.Index(text, phase)
		if i < 0 || i < last {
			t.Errorf("output lacks %q after position %d:\n%s", phase, last, text)
			continue
		}
		last = i
	}

	// The image is built now: the same command is a cache hit, and
	// NIXERY_URL names the server.
	cmd = exec.Command(bin, "build", "--quiet", "shell/jq")
	cmd.Env = append(os.Environ(), "NIXERY_URL=http://"+server.addr)
	out, err = cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "docker pull "+server.addr+"/shell/jq" {
		t.Errorf("nixery build --quiet: %v\n%s", err, out)
	}
}

func TestCLIBuildFails(t *testing.T) {
	needServer(t)
	for _, tt := range []struct {
		image, message string
		code           int
	}{
		{"hello/nosuchpkg", "unknown package(s): nosuchpkg", 1},
		{"Hello", "invalid repository name", 2},
	} {
		out, err := exec.Command(bin, "build", "--server", "http://"+server.addr, tt.image).CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != tt.code || !strings.Contains(string(out), tt.message) {
			t.Errorf("nixery build %s: %v (want exit %d)\n%s", tt.image, err, tt.code, out)
		}
	}
	// No server there.
	out, err := exec.Command(bin, "build", "--server", "http://127.0.0.1:1", "hello").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "nixery build: hello:") {
		t.Errorf("nixery build without a server: %v\n%s", err, out)
	}
}

// An unknown package's close names, in the build's error and as the
// commands that build the images they select; the registry's
// MANIFEST_UNKNOWN says them too.
func TestCLIBuildSuggests(t *testing.T) {
	needServer(t)
	packageListReady(t)
	out, err := exec.Command(bin, "build", "--server", "http://"+server.addr, "shell/helo").CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "unknown package(s): helo (did you mean hello?)") ||
		!strings.Contains(string(out), "did you mean: nixery build shell/hello\n") {
		t.Errorf("nixery build shell/helo: %v\n%s", err, out)
	}
	resp, body := get(t, "GET", "/v2/shell/helo/manifests/latest", "")
	if resp.StatusCode != 404 || !strings.Contains(string(body), `"code":"MANIFEST_UNKNOWN"`) || !strings.Contains(string(body), "helo (did you mean hello?)") {
		t.Errorf("GET shell/helo's manifest: %d %s", resp.StatusCode, body)
	}
}

// The operators' endpoints of the real server.
func TestHealthAndMetrics(t *testing.T) {
	needServer(t)
	if resp, body := get(t, "GET", "/healthz", ""); resp.StatusCode != 200 || strings.TrimSpace(string(body)) != "ok" {
		t.Errorf("/healthz: %d %s", resp.StatusCode, body)
	}
	if resp, body := get(t, "GET", "/readyz", ""); resp.StatusCode != 200 || strings.TrimSpace(string(body)) != "ready" {
		t.Errorf("/readyz: %d %s", resp.StatusCode, body)
	}
	get(t, "GET", "/v2/", "")
	get(t, "GET", "/", "")
	// Parsed with the Prometheus library's own parser: every documented
	// family is there, with its type, and so are runtime and process metrics.
	_, body := get(t, "GET", "/metrics", "")
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v\n%s", err, body)
	}
	for name, kind := range map[string]dto.MetricType{
		"nixery_http_requests_total":           dto.MetricType_COUNTER,
		"nixery_http_response_bytes_total":     dto.MetricType_COUNTER,
		"nixery_http_request_duration_seconds": dto.MetricType_HISTOGRAM,
		"nixery_builds_total":                  dto.MetricType_COUNTER,
		"nixery_build_phase_seconds":           dto.MetricType_HISTOGRAM,
		"nixery_manifest_cache_hits_total":     dto.MetricType_COUNTER,
		"nixery_manifest_cache_misses_total":   dto.MetricType_COUNTER,
		"nixery_nix_builds_total":              dto.MetricType_COUNTER,
		"nixery_layers_total":                  dto.MetricType_COUNTER,
		"nixery_builds_running":                dto.MetricType_GAUGE,
		"nixery_builds_queued":                 dto.MetricType_GAUGE,
		"nixery_gc_runs_total":                 dto.MetricType_COUNTER,
		"nixery_source_evaluation_failed":      dto.MetricType_GAUGE,
		"nixery_source_resolution_failed":      dto.MetricType_GAUGE,
		"nixery_source_checks_total":           dto.MetricType_COUNTER,
		"nixery_nix_reevaluations_total":       dto.MetricType_COUNTER,
		"go_goroutines":                        dto.MetricType_GAUGE,
		"go_memstats_heap_inuse_bytes":         dto.MetricType_GAUGE,
		"process_resident_memory_bytes":        dto.MetricType_GAUGE,
		"process_open_fds":                     dto.MetricType_GAUGE,
	} {
		f, ok := families[name]
		if !ok {
			t.Errorf("/metrics lacks the family %s", name)
			continue
		}
		if f.GetType() != kind {
			t.Errorf("%s is a %s, want %s", name, f.GetType(), kind)
		}
	}
	labels := func(m *dto.Metric) map[string]string {
		out := map[string]string{}
		for _, l := range m.GetLabel() {
			out[l.GetName()] = l.GetValue()
		}
		return out
	}
	found := false
	for _, m := range families["nixery_http_requests_total"].GetMetric() {
		if l := labels(m); l["route"] == "v2_base" && l["code"] == "2xx" && m.GetCounter().GetValue() >= 1 {
			found = true
		}
	}
	if !found {
		t.Errorf("no 2xx request counted for route v2_base")
	}
	// One log line per request, with its route.
	if !strings.Contains(server.log.String(), "route=health path=/healthz status=200") {
		t.Errorf("no request log line for /healthz in:\n%s", tail(server.log.String(), 10))
	}
}

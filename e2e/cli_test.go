package e2e

import (
	"os"
	"os/exec"
	"strings"
	"testing"
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
	for _, phase := range []string{"queued", "phase realise", "phase graph", "phase layers", "phase pack", "phase manifest", "done", "image ready: shell/jq (sha256:", "docker pull " + server.addr + "/shell/jq"} {
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
	_, body := get(t, "GET", "/metrics", "")
	for _, want := range []string{
		`nixery_http_requests_total{route="v2_base",code="2xx"}`,
		`nixery_http_requests_total{route="web",code="2xx"}`,
		`nixery_http_response_bytes_total{route="web"}`,
		`nixery_http_request_duration_seconds_bucket{route="health",le="+Inf"}`,
		`nixery_builds_total{result="succeeded"}`,
		`nixery_build_phase_seconds_count{phase="pack"}`,
		"nixery_builds_queued ",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	// One log line per request, with its route.
	if !strings.Contains(server.log.String(), "route=health path=/healthz status=200") {
		t.Errorf("no request log line for /healthz in:\n%s", tail(server.log.String(), 10))
	}
}

package e2e

// The browser test drives Debian's headless Chromium through chromedriver
// (the W3C WebDriver protocol is plain HTTP and JSON, so it needs no Go
// dependency): it opens the index page, searches for a package, opens its
// image page, starts the build and waits for the result, keeping
// screenshots as CI artefacts outside git.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixery/nixery/internal/need"
)

// artifactsDir is where screenshots go: $NIXERY_ARTIFACTS, or
// $TMPDIR/nixery-artifacts.
func artifactsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("NIXERY_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "nixery-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// needBrowser returns the paths of chromium and chromedriver, or skips
// (fails under NIXERY_REQUIRE_E2E) when they are missing.
func needBrowser(t *testing.T) (chromium, driver string) {
	t.Helper()
	var missing []string
	for _, name := range []string{"chromium", "chromedriver"} {
		p, err := exec.LookPath(name)
		if err != nil {
			missing = append(missing, name)
		}
		if name == "chromium" {
			chromium = p
		} else {
			driver = p
		}
	}
	if len(missing) > 0 {
		msg := fmt.Sprintf("%s not installed (bash scripts/deps installs Debian's chromium and chromium-driver)", strings.Join(missing, ", "))
		need.Skip(t, msg)
	}
	return chromium, driver
}

// webDriver is a minimal W3C WebDriver client for one session.
type webDriver struct {
	t       *testing.T
	base    string // http://127.0.0.1:<port>/session/<id>
	timeout time.Duration
}

func (d *webDriver) call(method, path string, body any) json.RawMessage {
	d.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, d.base+path, rd)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 2 * time.Minute}).Do(req)
	if err != nil {
		d.t.Fatalf("webdriver %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var out struct {
		Value json.RawMessage `json:"value"`
	}
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &out); err != nil || resp.StatusCode != 200 {
		d.t.Fatalf("webdriver %s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	return out.Value
}

// find returns the element id of the first match of a CSS selector,
// waiting for it to appear.
func (d *webDriver) find(css string) string {
	d.t.Helper()
	deadline := time.Now().Add(d.timeout)
	for {
		var found []map[string]string
		json.Unmarshal(d.call("POST", "/elements", map[string]string{"using": "css selector", "value": css}), &found)
		if len(found) > 0 {
			for _, id := range found[0] {
				return id
			}
		}
		if time.Now().After(deadline) {
			d.screenshot("failed")
			d.t.Fatalf("no element %q within %s; page text:\n%s", css, d.timeout, d.text("body"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (d *webDriver) text(css string) string {
	var found []map[string]string
	json.Unmarshal(d.call("POST", "/elements", map[string]string{"using": "css selector", "value": css}), &found)
	if len(found) == 0 {
		return ""
	}
	for _, id := range found[0] {
		var s string
		json.Unmarshal(d.call("GET", "/element/"+id+"/text", nil), &s)
		return s
	}
	return ""
}

// waitText waits until the text of css contains want.
func (d *webDriver) waitText(css, want string) string {
	d.t.Helper()
	return d.waitFor(css, fmt.Sprintf("contained %q", want), func(s string) bool { return strings.Contains(s, want) })
}

// waitFor waits until ok accepts the text of css; what says what it
// waits for.
func (d *webDriver) waitFor(css, what string, ok func(string) bool) string {
	d.t.Helper()
	deadline := time.Now().Add(d.timeout)
	for {
		if s := d.text(css); ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			d.screenshot("failed")
			d.t.Fatalf("%q never %s within %s; it has %q", css, what, d.timeout, d.text(css))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (d *webDriver) url() string {
	var s string
	json.Unmarshal(d.call("GET", "/url", nil), &s)
	return s
}

// screenshot saves the viewport as <artifacts>/browser-<name>.png.
func (d *webDriver) screenshot(name string) string {
	d.t.Helper()
	var b64 string
	json.Unmarshal(d.call("GET", "/screenshot", nil), &b64)
	png, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		d.t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(artifactsDir(d.t), "browser-"+name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		d.t.Fatal(err)
	}
	d.t.Logf("screenshot: %s", path)
	return path
}

// startBrowser starts chromedriver and a headless Chromium session.
func startBrowser(t *testing.T) *webDriver {
	chromium, driver := needBrowser(t)
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var log bytes.Buffer
	cmd := exec.CommandContext(ctx, driver, fmt.Sprintf("--port=%d", port))
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	root := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(root + "/status")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("chromedriver did not start: %v\n%s", err, log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	profile := t.TempDir()
	caps := map[string]any{"capabilities": map[string]any{"alwaysMatch": map[string]any{
		"browserName": "chrome",
		"goog:chromeOptions": map[string]any{
			"binary": chromium,
			"args": []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
				"--disable-background-networking", "--disable-component-update", "--disable-sync",
				"--disable-dev-shm-usage", "--user-data-dir=" + profile, "--window-size=1000,1300"},
		},
	}}}
	d := &webDriver{t: t, base: root, timeout: 60 * time.Second}
	var session struct {
		SessionID string `json:"sessionId"`
	}
	if err := json.Unmarshal(d.call("POST", "/session", caps), &session); err != nil || session.SessionID == "" {
		t.Fatalf("no webdriver session: %v\n%s", err, log.String())
	}
	d.base = root + "/session/" + session.SessionID
	t.Cleanup(func() {
		req, _ := http.NewRequest("DELETE", d.base, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	})
	return d
}

func TestBrowserSearchBuildAndSeeResult(t *testing.T) {
	needServer(t)
	d := startBrowser(t)
	site := "http://" + server.addr

	// The index page: this host's pull commands.
	d.call("POST", "/url", map[string]string{"url": site + "/"})
	if body := d.text("body"); !strings.Contains(body, "docker pull "+server.addr+"/shell/git/htop") {
		t.Errorf("index page lacks this host's pull command:\n%s", body)
	}

	// Search as you type.
	q := d.find("#q")
	d.call("POST", "/element/"+q+"/value", map[string]string{"text": "xev"})
	d.waitText("#results", "xorg.xev")
	d.waitText("#status", "match")
	d.screenshot("search")

	// The result leads to the image page, which offers a build.
	d.call("POST", "/element/"+d.find("#results a")+"/click", map[string]any{})
	d.waitText("h1", server.addr+"/xorg.xev")
	d.waitText("body", "not built yet")

	// Build it and watch the build page until the result.
	start := time.Now()
	d.call("POST", "/element/"+d.find("#build")+"/click", map[string]any{})
	d.waitText("h1", "Building")
	result := d.waitText("#result", "Image ready")
	t.Logf("build page reached its result in %s: %q", time.Since(start).Round(time.Millisecond), result)
	if !strings.Contains(result, "docker pull "+server.addr+"/xorg.xev") || !strings.Contains(result, "sha256:") {
		t.Errorf("result lacks the pull command or digest: %q", result)
	}
	if log := d.text("#log"); !strings.Contains(log, "== realise") || !strings.Contains(log, "== manifest") {
		t.Errorf("build log lacks the phases: %q", log)
	}
	d.screenshot("build")

	// The result links to the image page, now with layers and closure.
	d.call("POST", "/element/"+d.find("#image-link")+"/click", map[string]any{})
	d.waitText("body", "Closure")
	if body := d.text("body"); !strings.Contains(body, "xev-1.2.5") || !strings.Contains(body, "customisation layer") {
		t.Errorf("image page after the build:\n%s", body)
	}
	if !strings.HasSuffix(d.url(), "/image/xorg.xev") {
		t.Errorf("image link went to %s", d.url())
	}
	d.screenshot("image")
}

// The build page of an unknown package links the images its close names
// select; the index page leads to the page of recent builds, which lists
// that failed build with its error.
func TestBrowserSuggestionAndBuilds(t *testing.T) {
	needServer(t)
	packageListReady(t)
	d := startBrowser(t)
	site := "http://" + server.addr

	d.call("POST", "/url", map[string]string{"url": site + "/build/shell/helo"})
	d.waitText("#result", "The build failed")
	if s := d.waitText("#suggestions", "shell/hello"); !strings.HasPrefix(s, "Did you mean shell/hello") {
		t.Errorf("suggestions: %q", s)
	}
	link := d.find("#suggestions a.suggestion")
	var href string
	json.Unmarshal(d.call("GET", "/element/"+link+"/attribute/href", nil), &href)
	if href != "/image/shell/hello" {
		t.Errorf("the suggestion links %q", href)
	}
	d.screenshot("suggestion")
	d.call("POST", "/element/"+link+"/click", map[string]any{})
	d.waitText("h1", server.addr+"/shell/hello")
	if !strings.HasSuffix(d.url(), "/image/shell/hello") {
		t.Errorf("the suggestion went to %s", d.url())
	}

	d.call("POST", "/url", map[string]string{"url": site + "/"})
	d.call("POST", "/element/"+d.find("#builds-link")+"/click", map[string]any{})
	d.waitText("h1", "Builds")
	ended := d.waitText("#finished", "shell/helo")
	if !strings.Contains(ended, "failed") || !strings.Contains(ended, "unknown package(s): helo (did you mean hello?)") || !strings.Contains(ended, "realise") {
		t.Errorf("the page of builds lists:\n%s", ended)
	}
	d.screenshot("builds")
}

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixery/nixery/internal/demo"
)

// guardedSet is the demo set behind a default.nix that may carry
// nixpkgs' guard against old Nix, set above every Nix there is. guard
// switches it on or off under a running server.
func guardedSet(t *testing.T) (dir string, guard func(on bool)) {
	t.Helper()
	busybox, err := demo.FindBusybox()
	if err != nil {
		t.Fatal(err)
	}
	dir = filepath.Join(t.TempDir(), "pkgs")
	if err := demo.Extract(dir, busybox); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "default.nix"), filepath.Join(dir, "real.nix")); err != nil {
		t.Fatal(err)
	}
	guard = func(on bool) {
		t.Helper()
		expr := "args: import ./real.nix args\n"
		if on {
			// nixpkgs' default.nix, with its lib/minver.nix at 99.
			expr = `args:
if builtins.compareVersions builtins.nixVersion "99" < 0 then abort ''
  This version of Nixpkgs requires Nix >= 99, please upgrade:

  - If you are running NixOS, nixos-rebuild can be used to upgrade your system.
''
else import ./real.nix args
`
		}
		tmp := filepath.Join(dir, "default.nix.tmp")
		if err := os.WriteFile(tmp, []byte(expr), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "default.nix")); err != nil {
			t.Fatal(err)
		}
	}
	guard(false)
	return dir, guard
}

// waitFor polls cond every 100 ms until it holds or within has passed.
func waitFor(t *testing.T, s *nixery, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s\nserver log:\n%s", what, within, tail(s.log.String(), 30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestSourceNixCannotEvaluate serves a package set whose guard refuses
// the running Nix, as nixpkgs refuses Nix older than 2.18: the fault is
// found at start-up and shown to the operator (an ERROR log line with
// Nix's reason, the gauge) and to visitors (the index page); new images
// fail at once with a retryable 503 that names the reason, without
// running Nix; an image built before is still served; and once the set
// is fixed under the running server, new images are built again.
func TestSourceNixCannotEvaluate(t *testing.T) {
	needServer(t)
	pkgs, guard := guardedSet(t)
	tmp := t.TempDir()
	storageDir := filepath.Join(tmp, "storage")
	env := []string{"NIXERY_PKGS_PATH=" + pkgs, "NIXERY_SOURCE_CHECK_INTERVAL=1", "NIX_CONFIG=substituters ="}
	accept := "application/vnd.oci.image.manifest.v1+json"

	// Built while the set evaluates.
	before, err := start(tmp, storageDir, env...)
	if err != nil {
		t.Fatal(err)
	}
	resp, _ := before.get(t, "GET", "/v2/hello/manifests/latest", accept)
	before.stop()
	if resp.StatusCode != 200 {
		t.Fatalf("hello before the breakage: %d\n%s", resp.StatusCode, tail(before.log.String(), 30))
	}
	built := resp.Header.Get("Docker-Content-Digest")

	guard(true)
	s, err := start(tmp, storageDir, env...)
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	waitFor(t, s, "the gauge", 60*time.Second, func() bool { return s.metric(t, "nixery_source_evaluation_failed") == 1 })

	// The operator's log: one ERROR line with Nix's reason.
	var errorLine string
	for _, l := range strings.Split(s.log.String(), "\n") {
		if strings.Contains(l, "level=ERROR") && strings.Contains(l, "package source cannot be evaluated") {
			errorLine = l
		}
	}
	if !strings.Contains(errorLine, "This version of Nixpkgs requires Nix >= 99") || !strings.Contains(errorLine, "nix=\"Nix 2.") {
		t.Errorf("no ERROR line with the reason and the Nix version in the log:\n%s", tail(s.log.String(), 30))
	}

	// Visitors: the index page says it, at once.
	t0 := time.Now()
	resp, page := s.get(t, "GET", "/", "")
	if resp.StatusCode != 200 || !strings.Contains(string(page), "New images cannot be built now") ||
		!strings.Contains(string(page), "requires Nix &gt;= 99") || time.Since(t0) > 2*time.Second {
		t.Errorf("index page: %d after %s, without the fault:\n%s", resp.StatusCode, time.Since(t0), page)
	}

	// New images: a spec error at once, no Nix.
	builds, evaluations := s.metric(t, "nixery_nix_builds_total"), s.metric(t, "nixery_nix_evaluations_total")
	for _, name := range []string{"jq", "shell/hello", "jq"} {
		resp, body := s.get(t, "GET", "/v2/"+name+"/manifests/latest", accept)
		var answer struct {
			Errors []struct{ Code, Message string }
		}
		json.Unmarshal(body, &answer)
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" || len(answer.Errors) != 1 || answer.Errors[0].Code != "UNAVAILABLE" ||
			!strings.Contains(answer.Errors[0].Message, "cannot be evaluated by Nix 2.") ||
			!strings.Contains(answer.Errors[0].Message, "This version of Nixpkgs requires Nix >= 99") {
			t.Errorf("%s: %d, Retry-After %q: %s", name, resp.StatusCode, resp.Header.Get("Retry-After"), body)
		}
	}
	if b, e := s.metric(t, "nixery_nix_builds_total"), s.metric(t, "nixery_nix_evaluations_total"); b != builds || e != evaluations {
		t.Errorf("refused pulls ran Nix: builds %d → %d, evaluations %d → %d", builds, b, evaluations, e)
	}

	// An image built before is served.
	resp, _ = s.get(t, "GET", "/v2/hello/manifests/latest", accept)
	if resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != built {
		t.Errorf("hello, built before: %d %s, want 200 %s", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), built)
	}

	// Fixed under the running server: noticed within a few rounds.
	guard(false)
	waitFor(t, s, "recovery", 60*time.Second, func() bool { return s.metric(t, "nixery_source_evaluation_failed") == 0 })
	if !strings.Contains(s.log.String(), "evaluates it again") {
		t.Errorf("recovery not logged:\n%s", tail(s.log.String(), 30))
	}
	if out := strings.TrimSpace(inImage(t, pullFrom(t, s, "shell/jq"), "echo works | jq")); out != "works" {
		t.Errorf("shell/jq after the fix: %q", out)
	}
	if _, page := s.get(t, "GET", "/", ""); strings.Contains(string(page), "New images cannot be built now") {
		t.Error("the index page still shows the fault after the fix")
	}
}

// TestIndexDoesNotWaitForSource serves a package repository whose server
// accepts connections and never answers: the index page answers at once,
// saying the revision is being resolved, and shows the repository's URL
// without its credentials.
func TestIndexDoesNotWaitForSource(t *testing.T) {
	needServer(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	held := make(chan net.Conn, 64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held <- c // never read from, never answered
		}
	}()
	defer func() {
		for {
			select {
			case c := <-held:
				c.Close()
			default:
				return
			}
		}
	}()
	tmp := t.TempDir()
	repo := fmt.Sprintf("http://nixery:s3cret-token@%s/pkgs.git", ln.Addr())
	s, err := start(tmp, filepath.Join(tmp, "storage"), "NIXERY_PKGS_REPO="+repo)
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	// The background resolution is under way: git has connected.
	select {
	case c := <-held:
		held <- c
	case <-time.After(30 * time.Second):
		t.Fatal("git never connected to the repository")
	}
	for range 3 {
		client := &http.Client{Timeout: 2 * time.Second}
		t0 := time.Now()
		resp, err := client.Get("http://" + s.addr + "/")
		if err != nil {
			t.Fatalf("index page: %v", err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		page := string(body)
		if err != nil || resp.StatusCode != 200 || !strings.Contains(page, "being resolved") || time.Since(t0) > time.Second {
			t.Errorf("index page: %d %v after %s:\n%s", resp.StatusCode, err, time.Since(t0), page)
		}
		if strings.Contains(page, "s3cret-token") || !strings.Contains(page, "http://nixery:xxxxx@") {
			t.Errorf("the page shows the repository's credentials, or not its redacted URL:\n%s", page)
		}
	}
	// Nor does the search: it is retried once latest is resolved.
	client := &http.Client{Timeout: 2 * time.Second}
	t0 := time.Now()
	resp, err := client.Get("http://" + s.addr + "/api/search?q=hello")
	if err != nil {
		t.Fatalf("search: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "being resolved") || time.Since(t0) > time.Second {
		t.Errorf("search: %d after %s: %s", resp.StatusCode, time.Since(t0), body)
	}
	if strings.Contains(s.log.String(), "s3cret-token") {
		t.Errorf("the log shows the credentials:\n%s", s.log.String())
	}
}

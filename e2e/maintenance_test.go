package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestMaintenanceUnderLoad runs what an operator runs — nixery gc, a dry
// run, and nixery build --local — on the storage of a live server while
// it builds a big image cold. Every command succeeds, and afterwards every
// image pulls completely (skopeo checks every digest), before and after a
// restart of the server.
func TestMaintenanceUnderLoad(t *testing.T) {
	needServer(t)
	tmp := t.TempDir()
	store := filepath.Join(tmp, "storage")
	s, err := start(tmp, store)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			s.stop()
		}
	}()
	accept := "application/vnd.oci.image.manifest.v1+json"
	if resp, body := s.get(t, "GET", "/v2/shell/hello/manifests/latest", accept); resp.StatusCode != 200 {
		t.Fatalf("warm-up: %d %s", resp.StatusCode, body)
	}

	// The operator's commands, as separate processes on the same storage.
	env := append(os.Environ(), "XDG_CACHE_HOME="+filepath.Join(tmp, "cache"), "STORAGE_PATH="+store,
		"NIXERY_CHANNEL=", "NIXERY_PKGS_REPO=", "NIXERY_PKGS_PATH=")
	command := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	big := "shell/git/python3/perl/curl/jq"
	var wg sync.WaitGroup
	results := make(chan string, 8)
	wg.Add(1)
	go func() {
		defer wg.Done()
		resp, body := s.get(t, "GET", "/v2/"+big+"/manifests/latest", accept)
		if resp.StatusCode != 200 {
			results <- fmt.Sprintf("cold build of %s: %d %s", big, resp.StatusCode, body)
		}
	}()
	// Start the maintenance while the build runs.
	deadline := time.Now().Add(30 * time.Second)
	for s.metric(t, "nixery_builds_running") == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	for _, args := range [][]string{
		{"gc", "--max-age", "2h"},
		{"gc", "--dry-run"},
		{"build", "--local", "shell/curl"},
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if out, err := command(args...); err != nil {
				results <- fmt.Sprintf("nixery %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}()
	}
	wg.Wait()
	close(results)
	for r := range results {
		t.Error(r)
	}
	if t.Failed() {
		t.Fatalf("server log:\n%s", tail(s.log.String(), 40))
	}

	images := []string{"shell/hello", big, "shell/curl"}
	for _, ref := range images {
		rootfs := pullFrom(t, s, ref)
		if out := inImage(t, rootfs, "echo ok"); !strings.Contains(out, "ok") {
			t.Errorf("%s: %q", ref, out)
		}
	}
	s.stop()
	stopped = true
	again, err := start(tmp, store)
	if err != nil {
		t.Fatal(err)
	}
	defer again.stop()
	for _, ref := range images {
		pullFrom(t, again, ref)
	}
	if n := again.metric(t, "nixery_nix_builds_total"); n != 0 {
		t.Errorf("after the restart Nix ran %d times; every image should come from storage", n)
	}
}

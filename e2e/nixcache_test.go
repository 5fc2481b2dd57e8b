package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nixery/nixery/internal/need"
)

// replica is a `nixery serve` of this test's own, possibly with a Nix
// store of its own.
type replica struct {
	nixery
	out *lockedBuffer
	pid int
}

// emptyStore starts a command in a private mount namespace with a tmpfs
// over /nix: the command sees an empty Nix store, which Debian's nix-bin
// (in /usr/bin, store in /nix) initialises itself (database, gcroots,
// profiles) at its first use. The command keeps the process id of unshare
// (no --fork) and sh (exec).
var emptyStore = []string{"unshare", "--mount", "--propagation", "private",
	"sh", "-c", `mount -t tmpfs nixery-e2e-store /nix && mkdir -p /nix/var/nix && exec "$0" "$@"`}

// startReplica runs a Nixery server over the demo set with storage and
// caches of its own under tmp/name, inside wrap (a command prefix, or
// none); env adds to the environment.
func startReplica(t *testing.T, tmp, name string, wrap []string, env ...string) *replica {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{nixery: nixery{addr: fmt.Sprintf("127.0.0.1:%d", port), log: new(lockedBuffer)}, out: new(lockedBuffer)}
	args := append(append([]string{}, wrap...), bin, "serve", "--host", "127.0.0.1", "--port", fmt.Sprint(port))
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(),
		"XDG_CACHE_HOME="+filepath.Join(tmp, name, "cache"),
		"STORAGE_PATH="+filepath.Join(tmp, name, "storage"),
		"NIX_TIMEOUT=120",
		"NIXERY_CHANNEL=", "NIXERY_PKGS_REPO=", "NIXERY_PKGS_PATH=", "NIXERY_PKGS_FLAKE=",
	)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout, cmd.Stderr = r.out, r.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.pid = cmd.Process.Pid
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	r.stop = func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + r.addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			return r
		}
		select {
		case <-exited:
			t.Fatalf("replica %s exited at start-up:\n%s", name, r.out)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			r.stop()
			t.Fatalf("replica %s did not answer within 60s:\n%s", name, r.out)
		}
	}
}

// waitLog waits until the replica's log has a line containing s.
func (r *replica) waitLog(t *testing.T, s string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for wait := 10 * time.Millisecond; !strings.Contains(r.out.String(), s); wait = min(2*wait, time.Second) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log within %s:\n%s", s, within, tail(r.out.String(), 30))
		}
		time.Sleep(wait) // polling a log for an event, with a deadline
	}
}

// store lists the replica's Nix store as the replica sees it, through its
// root in /proc (which resolves in its mount namespace).
func (r *replica) store(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/root/nix/store", r.pid))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if e.Name() != ".links" {
			names = append(names, e.Name())
		}
	}
	return names
}

// TestNixCacheSubstitutes: replica A builds an image and pushes its
// closure to a file:// binary cache; replica B, with an empty Nix store
// and storage of its own, builds the same image by fetching every store
// path from the cache: Nix says it copied them from there, no builder
// ran (nothing was built: the build-time-only bootstrap tools, which any
// build of the demo set needs, never appear in B's store), and the
// image is the same, byte for byte, and runs.
func TestNixCacheSubstitutes(t *testing.T) {
	needServer(t)
	need.Tool(t, "unshare") // util-linux
	tmp := t.TempDir()
	cache := filepath.Join(tmp, "nix-cache")
	env := "NIXERY_NIX_CACHE=file://" + cache
	const oci = "application/vnd.oci.image.manifest.v1+json"

	a := startReplica(t, tmp, "a", nil, env)
	defer a.stop()
	resp, body := a.get(t, "GET", "/v2/shell/hello/manifests/latest", oci)
	if resp.StatusCode != 200 {
		t.Fatalf("replica A: %d %s\n%s", resp.StatusCode, body, tail(a.out.String(), 20))
	}
	digest := resp.Header.Get("Docker-Content-Digest")
	a.waitLog(t, "pushed to the Nix binary cache", 2*time.Minute)
	if strings.Contains(a.out.String(), "nix cache push failed") {
		t.Fatalf("replica A's push failed:\n%s", tail(a.out.String(), 20))
	}
	if n := a.metric(t, `nixery_nix_cache_pushes_total{result="succeeded"}`); n != 1 {
		t.Errorf("replica A counts %d pushes, want 1", n)
	}

	b := startReplica(t, tmp, "b", emptyStore, env)
	defer b.stop()
	// Empty but for what a start-up evaluation (the search list) may
	// have added: the imported busybox and derivation files.
	for _, p := range b.store(t) {
		if !strings.HasSuffix(p, ".drv") && !strings.HasSuffix(p, "-bootstrap-busybox") {
			t.Fatalf("replica B's store is not empty: %v", b.store(t))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "build", "--server", "http://"+b.addr, "shell/hello").CombinedOutput()
	if err != nil {
		t.Fatalf("nixery build on replica B: %v\n%s\nB's log:\n%s", err, out, tail(b.out.String(), 20))
	}
	copied := regexp.MustCompile(`copying path '/nix/store/[a-z0-9]{32}-([^']+)' from 'file://` + regexp.QuoteMeta(cache) + `'`)
	fetched := map[string]bool{}
	for _, m := range copied.FindAllStringSubmatch(string(out), -1) {
		fetched[m[1]] = true
	}
	for _, want := range []string{"hello-2.12.1", "bash-interactive-5.2", "coreutils-9.4", "libcommon-2.38"} {
		if !fetched[want] {
			t.Errorf("Nix did not say it copied %s from the cache; it copied %v:\n%s", want, fetched, out)
		}
	}
	if strings.Contains(string(out), "building '/nix/store/") {
		t.Errorf("replica B built something:\n%s", out)
	}
	store := b.store(t)
	var built []string
	for _, p := range store {
		if strings.HasSuffix(p, "-bootstrap-tools") {
			built = append(built, p)
		}
	}
	if len(built) > 0 || !strings.Contains(strings.Join(store, " "), "-hello-2.12.1") {
		t.Errorf("replica B's store: bootstrap tools %v (want none), all: %v", built, store)
	}
	// The check above can fail: building the demo set makes the tools,
	// as it did in the machine's store, which A used.
	if host, _ := filepath.Glob("/nix/store/*-bootstrap-tools"); len(host) == 0 {
		t.Error("the machine's store has no bootstrap tools: the check of B's store proves nothing")
	}
	if n := b.metric(t, "nixery_nix_builds_total"); n != 1 {
		t.Errorf("replica B ran Nix %d times, want 1 (its own storage has no image)", n)
	}

	resp, _ = b.get(t, "GET", "/v2/shell/hello/manifests/latest", oci)
	if got := resp.Header.Get("Docker-Content-Digest"); resp.StatusCode != 200 || got != digest {
		t.Errorf("replica B: %d %s, want A's %s", resp.StatusCode, got, digest)
	}
	rootfs := pullFrom(t, &b.nixery, "shell/hello")
	if out := inImage(t, rootfs, "hello"); !strings.Contains(out, "Hello, world!") {
		t.Errorf("hello from replica B's image printed %q", out)
	}
}

// TestNixCacheBuildLocalPushes: `nixery build --local`, a process that
// ends with its build, pushes the closure to the cache before it exits
// and leaves no garbage-collector roots of its push behind.
func TestNixCacheBuildLocalPushes(t *testing.T) {
	needServer(t)
	tmp := t.TempDir()
	cache, tmpdir := filepath.Join(tmp, "nix-cache"), filepath.Join(tmp, "tmp")
	os.Mkdir(tmpdir, 0o755)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "build", "--local", "--quiet", "shell/hello")
	cmd.Env = append(os.Environ(), "XDG_CACHE_HOME="+filepath.Join(tmp, "cache"), "STORAGE_PATH="+filepath.Join(tmp, "storage"),
		"NIXERY_CHANNEL=", "NIXERY_PKGS_REPO=", "NIXERY_PKGS_PATH=", "NIXERY_PKGS_FLAKE=", "NIXERY_NIX_CACHE=file://"+cache, "TMPDIR="+tmpdir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nixery build --local: %v\n%s", err, out)
	}
	infos, _ := filepath.Glob(filepath.Join(cache, "*.narinfo"))
	var pushed []string
	for _, f := range infos {
		data, _ := os.ReadFile(f)
		if m := regexp.MustCompile(`StorePath: /nix/store/[a-z0-9]{32}-(.*)`).FindSubmatch(data); m != nil {
			pushed = append(pushed, string(m[1]))
		}
	}
	for _, want := range []string{"hello-2.12.1", "bash-interactive-5.2", "nano-7.2", "bootstrap-busybox"} {
		if !slices.Contains(pushed, want) {
			t.Errorf("the cache lacks %s: %v", want, pushed)
		}
	}
	// Only the (shared) base directory of temporary GC roots, empty.
	left, _ := filepath.Glob(filepath.Join(tmpdir, "nixery-*"))
	inRoots, _ := filepath.Glob(filepath.Join(tmpdir, "nixery-gcroots-*", "*"))
	base := "nixery-gcroots-" + strconv.Itoa(os.Getuid())
	if len(left) > 1 || len(left) == 1 && filepath.Base(left[0]) != base || len(inRoots) > 0 {
		t.Errorf("left behind: %v %v", left, inRoots)
	}
}

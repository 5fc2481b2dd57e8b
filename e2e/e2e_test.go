// Package e2e pulls images from a real Nixery server, built by real Nix
// from the built-in demo package set, with real registry clients (skopeo,
// umoci), and runs programs from the unpacked images with chroot.
//
// The tests need nix-build, busybox (static), skopeo, umoci and root.
// Without them they skip, unless NIXERY_REQUIRE_E2E is set (as in CI),
// where a missing tool is a failure.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nixery/nixery/internal/need"
)

// nixery is a running Nixery process.
type nixery struct {
	addr string        // host:port
	log  *lockedBuffer // written by the process while tests read it
	stop func()
	kill func() // SIGKILL, as a node that is lost
	// client is the HTTPS client of a server started with TLS (trusting
	// its CA); nil for plain HTTP.
	client *http.Client
}

// url is the URL of path on the server.
func (s *nixery) url(path string) string {
	if s.client != nil {
		return "https://" + s.addr + path
	}
	return "http://" + s.addr + path
}

var (
	bin    string // the nixery binary built for the tests
	server nixery // the server shared by most tests
	setup  error  // why the tests cannot run
)

func TestMain(m *testing.M) {
	code := func() int {
		tmp, err := os.MkdirTemp("", "nixery-e2e-")
		if err != nil {
			panic(err)
		}
		defer os.RemoveAll(tmp)
		if setup = prepare(tmp); setup == nil {
			var s *nixery
			s, setup = start(tmp, filepath.Join(tmp, "storage"))
			if setup == nil {
				server = *s
				defer s.stop()
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}

// prepare checks the tools and builds the binary.
func prepare(tmp string) error {
	for _, tool := range []string{"nix-build", "busybox", "skopeo", "umoci", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is not installed (bash scripts/deps installs it)", tool)
		}
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("the end-to-end tests need root (for chroot into the pulled images)")
	}
	bin = filepath.Join(tmp, "nixery")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/nixery/nixery/cmd/nixery").CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	return nil
}

// start runs a Nixery server over the demo set with storage in dir;
// env adds or overrides environment variables.
func start(tmp, storageDir string, env ...string) (*nixery, error) {
	return startWith(tmp, storageDir, nil, env...)
}

// startWith is start; with client, the server speaks HTTPS (env sets
// NIXERY_TLS_CERT …), and client is how tests reach it.
func startWith(tmp, storageDir string, client *http.Client, env ...string) (*nixery, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &nixery{addr: fmt.Sprintf("127.0.0.1:%d", port), log: new(lockedBuffer), client: client}
	if client == nil {
		client = http.DefaultClient
	}
	cmd := exec.Command(bin, "serve", "--host", "127.0.0.1", "--port", fmt.Sprint(port))
	cmd.Env = append(os.Environ(),
		"XDG_CACHE_HOME="+filepath.Join(tmp, "cache"),
		"STORAGE_PATH="+storageDir,
		"NIX_TIMEOUT=120",
		"NIXERY_CHANNEL=", "NIXERY_PKGS_REPO=", "NIXERY_PKGS_PATH=", "NIXERY_PKGS_FLAKE=",
	)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	s.kill = func() {
		cmd.Process.Kill()
		<-exited
	}
	s.stop = func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := client.Get(s.url("/v2/"))
		if err == nil {
			resp.Body.Close()
			return s, nil
		}
		select {
		case <-exited:
			return nil, fmt.Errorf("nixery exited at start-up:\n%s", s.log)
		case <-time.After(100 * time.Millisecond):
		}
	}
	s.stop()
	return nil, fmt.Errorf("nixery did not answer within 60s:\n%s", s.log)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// lockedBuffer is the output of a process that the test reads while the
// process writes it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// needServer skips (or, in CI, fails) a test when the server is not up.
func needServer(t *testing.T) {
	t.Helper()
	if setup == nil {
		return
	}
	need.Skipf(t, "end-to-end test skipped: %v", setup)
}

// run runs a command and returns its combined output, failing the test on error.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s\nserver log:\n%s", name, strings.Join(args, " "), err, out, tail(server.log.String(), 30))
	}
	return string(out)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// packageListReady returns once the shared server has its package list
// in memory, so that an unknown package's error names close ones: the
// server makes the list in the background after start-up, and a search
// waits for it (or answers 503 while the source is being resolved).
func packageListReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, body := get(t, "GET", "/api/search?q=hello", "")
		if resp.StatusCode == 200 {
			return
		}
		if resp.StatusCode != 503 || time.Now().After(deadline) {
			t.Fatalf("the package list is not ready: %d %s", resp.StatusCode, body)
		}
		time.Sleep(100 * time.Millisecond) // Retry-After says 5 s; the source resolves sooner
	}
}

// pull copies ref (relative to the shared server) into an OCI layout
// with skopeo and unpacks it with umoci; it returns the root file system.
func pull(t *testing.T, ref string) string {
	t.Helper()
	return pullFrom(t, &server, ref)
}

// inImage runs a shell command inside rootfs with chroot.
func inImage(t *testing.T, rootfs, script string) string {
	t.Helper()
	return run(t, "chroot", rootfs, "bash", "-c", script)
}

func TestPullShellHelloAndRun(t *testing.T) {
	needServer(t)
	rootfs := pull(t, "shell/hello")

	if out := inImage(t, rootfs, "hello"); !strings.Contains(out, "Hello, world!") {
		t.Errorf("hello printed %q", out)
	}
	// The user database comes from the customisation layer.
	if out := inImage(t, rootfs, "id -un; id -u; whoami"); strings.Fields(out)[0] != "root" || strings.Fields(out)[1] != "0" {
		t.Errorf("id printed %q", out)
	}
	if out := inImage(t, rootfs, "cat /etc/passwd"); !strings.Contains(out, "nobody:x:65534:65534") {
		t.Errorf("/etc/passwd: %q", out)
	}
	// /tmp is world-writable and sticky.
	if out := inImage(t, rootfs, "echo scratch > /tmp/f && cat /tmp/f && stat -c %a /tmp"); out != "scratch\n1777\n" {
		t.Errorf("/tmp: %q", out)
	}
	// The shell meta-package brought its tools; /usr/bin/env and /bin/sh work.
	for _, prog := range []string{"bash", "ls", "sponge", "nano", "sh", "env"} {
		if _, err := os.Lstat(filepath.Join(rootfs, "bin", prog)); err != nil {
			t.Errorf("/bin/%s missing: %v", prog, err)
		}
	}
	if out := inImage(t, rootfs, "/usr/bin/env echo via-env && /bin/sh -c 'echo via-sh'"); out != "via-env\nvia-sh\n" {
		t.Errorf("env/sh: %q", out)
	}
	// Programs are real store paths with their dependencies.
	if out := inImage(t, rootfs, "ls /nix/store"); !strings.Contains(out, "-hello-") {
		t.Errorf("/nix/store: %q", out)
	}
	cfg := imageConfig(t, "shell/hello", "application/vnd.oci.image.manifest.v1+json")
	if fmt.Sprint(cfg.Config.Cmd) != "[bash]" || cfg.Architecture != "amd64" || cfg.OS != "linux" {
		t.Errorf("config: %+v", cfg)
	}
}

func TestCertificates(t *testing.T) {
	needServer(t)
	rootfs := pull(t, "shell/cacert")
	if out := inImage(t, rootfs, "cat /etc/ssl/certs/ca-bundle.crt"); !strings.Contains(out, "-----BEGIN CERTIFICATE-----") {
		t.Errorf("certificate bundle: %q", out)
	}
	cfg := imageConfig(t, "shell/cacert", "application/vnd.oci.image.manifest.v1+json")
	if !strings.Contains(strings.Join(cfg.Config.Env, " "), "SSL_CERT_FILE=/etc/ssl/certs/ca-bundle.crt") {
		t.Errorf("env: %v", cfg.Config.Env)
	}
}

type configJSON struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Config       struct {
		Env []string `json:"Env"`
		Cmd []string `json:"Cmd"`
	} `json:"config"`
}

// get fetches a URL path of the shared server with an Accept header.
func get(t *testing.T, method, path, accept string) (*http.Response, []byte) {
	t.Helper()
	return server.get(t, method, path, accept)
}

func (s *nixery) get(t *testing.T, method, path, accept string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, s.url(path), nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	client := s.client
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Minute}
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func imageConfig(t *testing.T, name, accept string) configJSON {
	t.Helper()
	_, body := get(t, "GET", "/v2/"+name+"/manifests/latest", accept)
	var m struct {
		Config struct{ Digest string } `json:"config"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("manifest: %v: %s", err, body)
	}
	_, body = get(t, "GET", "/v2/"+name+"/blobs/"+m.Config.Digest, "")
	var cfg configJSON
	if err := json.Unmarshal(body, &cfg); err != nil {
		t.Fatalf("config: %v: %s", err, body)
	}
	return cfg
}

func TestPullByDigestBothMediaTypes(t *testing.T) {
	needServer(t)
	for _, mt := range []string{
		"application/vnd.oci.image.manifest.v1+json",
		"application/vnd.docker.distribution.manifest.v2+json",
	} {
		t.Run(mt, func(t *testing.T) {
			resp, body := get(t, "GET", "/v2/hello/manifests/latest", mt)
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != mt {
				t.Fatalf("GET manifest: %d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
			}
			d := resp.Header.Get("Docker-Content-Digest")
			if !strings.HasPrefix(d, "sha256:") {
				t.Fatalf("Docker-Content-Digest = %q", d)
			}
			// skopeo pulls by digest, checks the digest and converts to OCI.
			rootfs := pull(t, "hello@"+d)
			if out := run(t, "chroot", rootfs, "hello"); !strings.Contains(out, "Hello, world!") {
				t.Errorf("hello printed %q", out)
			}
			// The same manifest again by digest, with any Accept.
			resp2, body2 := get(t, "GET", "/v2/hello/manifests/"+d, "")
			if resp2.StatusCode != 200 || !bytes.Equal(body, body2) || resp2.Header.Get("Content-Type") != mt {
				t.Errorf("GET by digest: %d %s", resp2.StatusCode, resp2.Header.Get("Content-Type"))
			}
		})
	}
}

func TestUnknownPackage(t *testing.T) {
	needServer(t)
	resp, body := get(t, "GET", "/v2/shell/nosuchpkg/alsomissing/manifests/latest", "")
	if resp.StatusCode != 404 || !strings.Contains(string(body), "MANIFEST_UNKNOWN") ||
		!strings.Contains(string(body), "nosuchpkg") || !strings.Contains(string(body), "alsomissing") {
		t.Errorf("unknown packages: %d %s", resp.StatusCode, body)
	}
	if resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("error Content-Type = %q", resp.Header.Get("Content-Type"))
	}
	// A real client shows the message to its user.
	out, err := exec.Command("skopeo", "inspect", "--tls-verify=false", "docker://"+server.addr+"/nosuchpkg").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "nosuchpkg") {
		t.Errorf("skopeo inspect of an unknown package: %v\n%s", err, out)
	}
}

func TestSameImageSameDigest(t *testing.T) {
	needServer(t)
	accept := "application/vnd.oci.image.manifest.v1+json"
	r1, b1 := get(t, "GET", "/v2/shell/hello/manifests/latest", accept)
	r2, b2 := get(t, "GET", "/v2/hello/coreutils/nano/moreutils/bashinteractive/manifests/latest", accept)
	if r1.StatusCode != 200 || r2.StatusCode != 200 {
		t.Fatalf("status %d %d: %s %s", r1.StatusCode, r2.StatusCode, b1, b2)
	}
	if d1, d2 := r1.Header.Get("Docker-Content-Digest"), r2.Header.Get("Docker-Content-Digest"); d1 != d2 {
		t.Errorf("same packages in another order gave %s and %s", d1, d2)
	}
}

// metric reads one value from the server's /metrics.
func (s *nixery) metric(t *testing.T, name string) int {
	t.Helper()
	_, body := s.get(t, "GET", "/metrics", "")
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var n int
			fmt.Sscan(v, &n)
			return n
		}
	}
	t.Fatalf("metric %s not found in:\n%s", name, body)
	return 0
}

func TestRestartKeepsCache(t *testing.T) {
	needServer(t)
	tmp := t.TempDir()
	store := filepath.Join(tmp, "storage")
	accept := "application/vnd.oci.image.manifest.v1+json"

	first, err := start(tmp, store)
	if err != nil {
		t.Fatal(err)
	}
	r1, body := first.get(t, "GET", "/v2/shell/hello/manifests/latest", accept)
	if r1.StatusCode != 200 {
		first.stop()
		t.Fatalf("first pull: %d %s", r1.StatusCode, body)
	}
	if n := first.metric(t, "nixery_nix_builds_total"); n != 1 {
		t.Errorf("first server ran Nix %d times, want 1", n)
	}
	first.stop()

	second, err := start(tmp, store)
	if err != nil {
		t.Fatal(err)
	}
	defer second.stop()
	r2, _ := second.get(t, "GET", "/v2/shell/hello/manifests/latest", accept)
	if d1, d2 := r1.Header.Get("Docker-Content-Digest"), r2.Header.Get("Docker-Content-Digest"); r2.StatusCode != 200 || d1 != d2 {
		t.Errorf("after restart: %d %s, before: %s", r2.StatusCode, d2, d1)
	}
	if n := second.metric(t, "nixery_nix_builds_total"); n != 0 {
		t.Errorf("after restart Nix ran %d times; want a cache hit", n)
	}
	if n := second.metric(t, "nixery_manifest_cache_hits_total"); n != 1 {
		t.Errorf("cache hits after restart = %d, want 1", n)
	}
}

func TestConcurrentPullsShareOneBuild(t *testing.T) {
	needServer(t)
	tmp := t.TempDir()
	s, err := start(tmp, filepath.Join(tmp, "storage"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	const n = 50
	digests := make(chan string, n)
	for range n {
		go func() {
			resp, _ := s.get(t, "GET", "/v2/shell/python3/manifests/latest", "application/vnd.oci.image.manifest.v1+json")
			digests <- fmt.Sprint(resp.StatusCode, " ", resp.Header.Get("Docker-Content-Digest"))
		}()
	}
	first := <-digests
	for range n - 1 {
		if d := <-digests; d != first {
			t.Errorf("answers differ: %q and %q", first, d)
		}
	}
	if !strings.HasPrefix(first, "200 sha256:") {
		t.Errorf("answer %q", first)
	}
	if got := s.metric(t, "nixery_nix_builds_total"); got != 1 {
		t.Errorf("%d concurrent pulls ran Nix %d times, want 1", n, got)
	}
}

func TestQueueOverflowAnswers429(t *testing.T) {
	needServer(t)
	tmp := t.TempDir()
	s, err := start(tmp, filepath.Join(tmp, "storage"), "NIXERY_MAX_BUILDS=1", "NIXERY_BUILD_QUEUE=0", "NIX_TIMEOUT=3")
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	done := make(chan int)
	go func() {
		resp, _ := s.get(t, "GET", "/v2/slow/manifests/latest", "")
		done <- resp.StatusCode
	}()
	deadline := time.Now().Add(30 * time.Second)
	for s.metric(t, "nixery_builds_running") != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the slow build never started")
		}
		time.Sleep(20 * time.Millisecond)
	}
	resp, body := s.get(t, "GET", "/v2/slow/hello/manifests/latest", "")
	if resp.StatusCode != 429 || !strings.Contains(string(body), "TOOMANYREQUESTS") || resp.Header.Get("Retry-After") == "" {
		t.Errorf("overflow: %d %q Retry-After %q", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
	// The slow build ends by NIX_TIMEOUT with a clear error.
	if code := <-done; code != 500 {
		t.Errorf("slow build answered %d, want 500 (timeout)", code)
	}
}

package builder

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/nixery/nixery/internal/demo/demotest"
	"github.com/nixery/nixery/internal/image"
	"github.com/nixery/nixery/internal/manifest"
	"github.com/nixery/nixery/internal/nix"
	"github.com/nixery/nixery/internal/source"
	"github.com/nixery/nixery/internal/storage"
)

// demoSet extracts the demo package set into a new directory.
func demoSet(t *testing.T) string { return demotest.Set(t) }

func newBuilder(t *testing.T, src source.Source, storePath string) *Builder {
	t.Helper()
	store, err := storage.NewFilesystem(storePath)
	if err != nil {
		t.Fatal(err)
	}
	return &Builder{
		Source:    src,
		Nix:       &nix.Runner{Timeout: 2 * time.Minute, Offline: true},
		Storage:   store,
		CacheTTL:  time.Hour,
		QueueSize: 8,
	}
}

func request(t *testing.T, name, tag string) *image.Request {
	t.Helper()
	req, err := image.Parse(name, tag)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func TestCacheSurvivesRestart(t *testing.T) {
	pkgs := demoSet(t)
	storePath := t.TempDir()
	ctx := context.Background()

	first := newBuilder(t, source.PathSource{Path: pkgs}, storePath)
	_, d1, err := first.Manifest(ctx, request(t, "shell/hello", "latest"), manifest.OCIManifest)
	if err != nil {
		t.Fatal(err)
	}
	if n := first.Stats().NixBuilds.Load(); n != 1 {
		t.Fatalf("first builder ran Nix %d times", n)
	}
	// The same image in the other format needs no build either.
	if _, _, err := first.Manifest(ctx, request(t, "shell/hello", "latest"), manifest.DockerManifest); err != nil {
		t.Fatal(err)
	}

	// A new process over the same storage: a cache hit, no Nix.
	second := newBuilder(t, source.PathSource{Path: pkgs}, storePath)
	_, d2, err := second.Manifest(ctx, request(t, "shell/hello", "latest"), manifest.OCIManifest)
	if err != nil {
		t.Fatal(err)
	}
	if d1 != d2 {
		t.Errorf("digest changed across restart: %s, %s", d1, d2)
	}
	if n := second.Stats().NixBuilds.Load(); n != 0 {
		t.Errorf("second builder ran Nix %d times; want a cache hit", n)
	}
	if first.Stats().CacheHits.Load() != 1 || second.Stats().CacheHits.Load() != 1 {
		t.Errorf("cache hits %d, %d", first.Stats().CacheHits.Load(), second.Stats().CacheHits.Load())
	}

	// Another image sharing store paths reuses their layers.
	third := newBuilder(t, source.PathSource{Path: pkgs}, storePath)
	if _, _, err := third.Manifest(ctx, request(t, "hello", "latest"), manifest.OCIManifest); err != nil {
		t.Fatal(err)
	}
	if third.Stats().LayersReused.Load() == 0 {
		t.Errorf("no layer reused for hello after shell/hello")
	}
}

func TestSingleFlight(t *testing.T) {
	b := newBuilder(t, source.PathSource{Path: demoSet(t)}, t.TempDir())
	const n = 50
	var wg sync.WaitGroup
	digests := make([]digest.Digest, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, digests[i], errs[i] = b.Manifest(context.Background(), request(t, "shell/jq", "latest"), manifest.OCIManifest)
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || digests[i] != digests[0] {
			t.Fatalf("request %d: %s, %v (first: %s)", i, digests[i], errs[i], digests[0])
		}
	}
	if got := b.Stats().NixBuilds.Load(); got != 1 {
		t.Errorf("%d concurrent requests ran Nix %d times, want 1", n, got)
	}
}

func TestDisconnectDoesNotCancelSharedBuild(t *testing.T) {
	b := newBuilder(t, source.PathSource{Path: demoSet(t)}, t.TempDir())
	leaving, leave := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, _, err := b.Manifest(leaving, request(t, "git", "latest"), manifest.OCIManifest)
		errc <- err
	}()
	// Wait until the first client's build is running, then join it and
	// let the first client go away.
	for b.Stats().NixBuilds.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	type result struct {
		d   digest.Digest
		err error
	}
	stayed := make(chan result, 1)
	go func() {
		_, d, err := b.Manifest(context.Background(), request(t, "git", "latest"), manifest.OCIManifest)
		stayed <- result{d, err}
	}()
	time.Sleep(5 * time.Millisecond)
	leave()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("the client that left got %v", err)
	}
	r := <-stayed
	if r.err != nil || r.d == "" {
		t.Fatalf("the client that stayed got %v", r.err)
	}
	if got := b.Stats().NixBuilds.Load(); got != 1 {
		t.Errorf("Nix ran %d times, want 1", got)
	}
}

func TestMovingSourceExpires(t *testing.T) {
	pkgs := demoSet(t)
	ctx := context.Background()
	b := newBuilder(t, source.PathSource{Path: pkgs}, t.TempDir())
	b.CacheTTL = 300 * time.Millisecond
	_, d1, err := b.Manifest(ctx, request(t, "hello", "latest"), manifest.OCIManifest)
	if err != nil {
		t.Fatal(err)
	}
	// Change the package set: within the cache time the old image is
	// served; after it, the change is picked up.
	nixFile := filepath.Join(pkgs, "default.nix")
	src, _ := os.ReadFile(nixFile)
	changed := strings.Replace(string(src), "Hello, world!", "Hello, changed world!", 1)
	if changed == string(src) {
		t.Fatal("demo set has no greeting to change")
	}
	os.WriteFile(nixFile, []byte(changed), 0o644)
	if _, d, err := b.Manifest(ctx, request(t, "hello", "latest"), manifest.OCIManifest); err != nil || d != d1 {
		t.Errorf("within the cache time: %s, %v; want the cached %s", d, err, d1)
	}
	time.Sleep(b.CacheTTL)
	_, d2, err := b.Manifest(ctx, request(t, "hello", "latest"), manifest.OCIManifest)
	if err != nil {
		t.Fatal(err)
	}
	if d2 == d1 {
		t.Errorf("after the cache time the changed package set was not picked up")
	}
	if got := b.Stats().NixBuilds.Load(); got != 2 {
		t.Errorf("Nix ran %d times, want 2", got)
	}
}

func TestQueueOverflow(t *testing.T) {
	b := newBuilder(t, source.PathSource{Path: demoSet(t)}, t.TempDir())
	b.MaxBuilds, b.QueueSize = 1, 1
	b.Nix.Timeout = 3 * time.Second
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// "slow" sleeps while building; distinct names are distinct builds.
	var wg sync.WaitGroup
	for _, name := range []string{"slow", "slow/hello"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.Manifest(ctx, request(t, name, "latest"), manifest.OCIManifest)
		}()
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		running, waiting := b.Queue()
		if running == 1 && waiting == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue never filled: %d running, %d waiting", running, waiting)
		}
		time.Sleep(5 * time.Millisecond)
	}
	_, _, err := b.Manifest(ctx, request(t, "slow/jq", "latest"), manifest.OCIManifest)
	if !errors.Is(err, ErrBusy) {
		t.Errorf("third build: %v, want ErrBusy", err)
	}
	if b.Stats().Rejected.Load() != 1 {
		t.Errorf("rejected = %d", b.Stats().Rejected.Load())
	}
	cancel()
	wg.Wait()
	// The detached builds end by NIX_TIMEOUT; leave nothing running.
	for running, waiting := b.Queue(); running+waiting > 0; running, waiting = b.Queue() {
		time.Sleep(50 * time.Millisecond)
	}
}

func TestGitTagsSelectPackageSets(t *testing.T) {
	pkgs := demoSet(t)
	repo := t.TempDir()
	git := func(args ...string) {
		cmd := exec.Command("git", args...)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	if out, err := exec.Command("cp", "-a", pkgs+"/.", repo).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	git("init", "-q", "-b", "main")
	git("add", "-A", "-f")
	git("commit", "-qm", "v1")
	git("tag", "v1")
	nixFile := filepath.Join(repo, "default.nix")
	src, _ := os.ReadFile(nixFile)
	os.WriteFile(nixFile, []byte(strings.Replace(string(src), "Hello, world!", "Hello from v2!", 1)), 0o644)
	git("commit", "-qam", "v2")
	git("tag", "v2")

	ctx := context.Background()
	b := newBuilder(t, &source.GitSource{Repository: repo, TTL: time.Hour}, t.TempDir())
	digests := map[string]digest.Digest{}
	for _, tag := range []string{"v1", "v2", "latest"} {
		_, d, err := b.Manifest(ctx, request(t, "hello", tag), manifest.OCIManifest)
		if err != nil {
			t.Fatalf("hello:%s: %v", tag, err)
		}
		digests[tag] = d
	}
	if digests["v1"] == digests["v2"] {
		t.Errorf("v1 and v2 gave the same image")
	}
	if digests["latest"] != digests["v2"] {
		t.Errorf("latest (main) differs from v2, its head")
	}
	if got := b.Stats().NixBuilds.Load(); got != 2 {
		t.Errorf("Nix ran %d times for three tags over two commits, want 2", got)
	}
	var unknown *nix.UnknownRevisionError
	if _, _, err := b.Manifest(ctx, request(t, "hello", "v3"), manifest.OCIManifest); !errors.As(err, &unknown) {
		t.Errorf("unknown tag: %v", err)
	}
	// A tag of 40 hex digits is a commit, taken without asking the
	// remote: v1's is v1's image; one the repository lacks is unknown.
	out, err := exec.Command("git", "-C", repo, "rev-parse", "v1").Output()
	if err != nil {
		t.Fatal(err)
	}
	if _, d, err := b.Manifest(ctx, request(t, "hello", strings.TrimSpace(string(out))), manifest.OCIManifest); err != nil || d != digests["v1"] {
		t.Errorf("v1's commit as the tag: %s, %v; want %s", d, err, digests["v1"])
	}
	var noCommit *nix.UnknownRevisionError
	missing := "0123456789abcdef0123456789abcdef01234567"
	if _, _, err := b.Manifest(ctx, request(t, "hello", missing), manifest.OCIManifest); !errors.As(err, &noCommit) || noCommit.Rev != missing {
		t.Errorf("a commit the repository lacks: %v, want an UnknownRevisionError", err)
	}
}

func TestWatchReportsPhasesInOrder(t *testing.T) {
	b := newBuilder(t, source.PathSource{Path: demoSet(t)}, t.TempDir())
	ctx := context.Background()
	events, err := b.Watch(ctx, request(t, "shell/curl", "latest"))
	if err != nil {
		t.Fatal(err)
	}
	var kinds, phases []string
	var last Event
	logs := 0
	for e := range events {
		kinds = append(kinds, e.Kind)
		if e.Kind == "phase" {
			phases = append(phases, e.Phase)
		}
		if e.Kind == "log" {
			logs++
		}
		last = e
	}
	if kinds[0] != "queued" || last.Kind != "done" || !strings.HasPrefix(last.Digest.String(), "sha256:") {
		t.Fatalf("events %v, last %+v", kinds, last)
	}
	if strings.Join(phases, ",") != strings.Join(Phases, ",") {
		t.Errorf("phases %v, want %v", phases, Phases)
	}
	// The manifest of the watched build is the one a pull gets.
	_, d, err := b.Manifest(ctx, request(t, "shell/curl", "latest"), manifest.OCIManifest)
	if err != nil || d != last.Digest {
		t.Errorf("Manifest = %s, %v; watched build said %s", d, err, last.Digest)
	}
	// Watching a cached image ends at once.
	events, _ = b.Watch(ctx, request(t, "shell/curl", "latest"))
	if e := <-events; e.Kind != "done" || e.Digest != d {
		t.Errorf("cached watch: %+v", e)
	}

	// A failing build ends with an error event carrying Nix's message.
	// Nix's output arrives as log events while it runs.
	events, _ = b.Watch(ctx, request(t, "broken", "latest"))
	logs = 0
	for e := range events {
		if e.Kind == "log" && strings.Contains(e.Message, "broken on purpose") {
			logs++
		}
		last = e
	}
	if last.Kind != "error" || !strings.Contains(last.Message, "broken on purpose") || logs != 1 {
		t.Errorf("failed build's last event: %+v; builder's line seen %d times", last, logs)
	}

	// Details and the recent list describe the built image.
	det, err := b.Details(ctx, request(t, "shell/curl", "latest"))
	if err != nil {
		t.Fatal(err)
	}
	if len(det.Closure) == 0 || len(det.Layers) < 2 || det.Manifests[manifest.OCIManifest] != d || len(det.Roots) != 5 {
		t.Errorf("details: %+v", det)
	}
	if det.Layers[len(det.Layers)-1].Paths != nil || len(det.Layers[0].Paths) == 0 {
		t.Errorf("layer paths: first %v, last %v", det.Layers[0].Paths, det.Layers[len(det.Layers)-1].Paths)
	}
	if _, err := b.Details(ctx, request(t, "jq", "latest")); !errors.Is(err, ErrNotBuilt) {
		t.Errorf("details of an unbuilt image: %v", err)
	}
	if r := b.Recent(); len(r) != 1 || r[0].Manifests[manifest.OCIManifest] != d {
		t.Errorf("recent: %v", r)
	}
	// Another process on the same storage sees the same recent images.
	other := &Builder{Source: b.Source, Nix: b.Nix, Storage: b.Storage}
	if r := other.Recent(); len(r) != 1 || r[0].Manifests[manifest.OCIManifest] != d || len(r[0].Closure) == 0 {
		t.Errorf("recent images seen by another builder: %v", r)
	}
	for _, phase := range []string{"realise", "graph", "pack"} {
		var m dto.Metric
		b.phaseHistogram().WithLabelValues(phase).(prometheus.Histogram).Write(&m)
		if c := m.GetHistogram().GetSampleCount(); c != 1 {
			t.Errorf("phase %s observed %d times, want 1", phase, c)
		}
	}
}

// A build whose time is up before Nix runs (the plan's storage reads took
// it all) fails with that, instead of going on without a result.
func TestBuildOutOfTimeBeforeNix(t *testing.T) {
	b := newBuilder(t, source.PathSource{Path: demoSet(t)}, t.TempDir())
	req := request(t, "hello", "latest")
	src, key, err := b.resolve(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, pl := range []plan{alonePlan{}, alonePlan{lead: func() {}}} {
		if img, err := b.newBuild(key, req, src, &progress{}, pl).run(ctx); err == nil || img != nil {
			t.Errorf("build with its time up: %v, %v; want an error", img, err)
		}
	}
}

package nix

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nixery/nixery/internal/demo"
	"github.com/nixery/nixery/internal/need"
)

// demoSource extracts the demo package set and returns a request for it,
// or skips the test if Nix or a static busybox is missing.
func demoSource(t *testing.T, packages ...string) Request {
	t.Helper()
	if _, err := exec.LookPath("nix-build"); err != nil {
		need.Skip(t, "nix-build not installed")
	}
	bb, err := demo.FindBusybox()
	if err != nil {
		need.Skip(t, err)
	}
	// No internet here: don't let Nix spend seconds asking a binary cache.
	t.Setenv("NIX_CONFIG", "substituters =")
	dir := t.TempDir()
	if err := demo.Extract(dir, bb); err != nil {
		t.Fatal(err)
	}
	return Request{SrcType: "path", SrcArgs: dir, Packages: packages, System: "x86_64-linux"}
}

func TestBuildHello(t *testing.T) {
	req := demoSource(t, "hello")
	var mu sync.Mutex
	var lines []string
	r := &Runner{Timeout: time.Minute, Log: func(l string) { mu.Lock(); lines = append(lines, l); mu.Unlock() }}
	res, err := r.Build(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Roots) != 1 || !strings.HasSuffix(res.Roots[0], "-hello-2.12.1") {
		t.Fatalf("roots %v, want one hello", res.Roots)
	}
	hello := res.Roots[0]
	out, err := exec.Command(filepath.Join(hello, "bin/hello")).Output()
	if err != nil || string(out) != "Hello, world!\n" {
		t.Errorf("hello printed %q, %v", out, err)
	}

	if !slices.IsSortedFunc(res.Closure, func(a, b StorePath) int { return strings.Compare(a.Path, b.Path) }) {
		t.Error("closure not sorted by path")
	}
	byName := map[string]StorePath{}
	for _, p := range res.Closure {
		if p.NarSize <= 0 {
			t.Errorf("%s: NarSize %d", p.Path, p.NarSize)
		}
		if slices.Contains(p.References, p.Path) {
			t.Errorf("%s refers to itself", p.Path)
		}
		if !slices.IsSorted(p.References) {
			t.Errorf("%s: references not sorted", p.Path)
		}
		byName[p.Path[strings.Index(p.Path, "-")+1:]] = p
	}
	for _, want := range []string{"hello-2.12.1", "libcommon-2.38", "bootstrap-busybox"} {
		if _, ok := byName[want]; !ok {
			t.Errorf("closure lacks %s: %v", want, res.Closure)
		}
	}
	refs := byName["hello-2.12.1"].References
	if len(refs) != 2 || !strings.HasSuffix(refs[0], "-bootstrap-busybox") && !strings.HasSuffix(refs[1], "-bootstrap-busybox") {
		t.Errorf("hello refers to %v, want busybox and libcommon", refs)
	}
	for _, p := range res.Closure {
		for _, ref := range p.References {
			if !slices.ContainsFunc(res.Closure, func(q StorePath) bool { return q.Path == ref }) {
				t.Errorf("%s refers to %s, which is not in the closure", p.Path, ref)
			}
		}
	}
	if len(lines) == 0 {
		t.Log("no stderr lines from Nix (everything was built already)")
	}
}

func TestResolve(t *testing.T) {
	src := demoSource(t)
	tests := []struct {
		packages []string
		want     []string // suffixes of the roots
	}{
		{[]string{"xorg.xev"}, []string{"-xev-1.2.5"}},
		{[]string{"bashinteractive"}, []string{"-bash-interactive-5.2"}},
		{[]string{"XORG.LIBX11"}, []string{"-libX11-1.8.7"}},
		{[]string{"fooBar"}, []string{"-foo-bar-1.0"}},
		{[]string{"FooBar"}, []string{"-Foo-Bar-2.0"}},
		{[]string{"xorg.xev", "hello", "xorg.xev"}, []string{"-xev-1.2.5", "-hello-2.12.1"}},
		{[]string{"git", "coreutils", "python3"}, []string{"-git-2.42.0", "-coreutils-9.4", "-python3-3.11.6"}},
	}
	r := &Runner{Timeout: time.Minute}
	for _, tt := range tests {
		t.Run(strings.Join(tt.packages, ","), func(t *testing.T) {
			req := src
			req.Packages = tt.packages
			res, err := r.Build(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Roots) != len(tt.want) {
				t.Fatalf("roots %v, want %v", res.Roots, tt.want)
			}
			for i, w := range tt.want {
				if !strings.HasSuffix(res.Roots[i], w) {
					t.Errorf("root %d is %s, want …%s", i, res.Roots[i], w)
				}
			}
		})
	}
}

func TestUnknownPackages(t *testing.T) {
	src := demoSource(t)
	tests := []struct {
		packages []string
		want     []string
		inError  []string
	}{
		{[]string{"foobar"}, []string{"foobar"}, []string{"ambiguous", "FooBar", "fooBar"}},
		{[]string{"nosuchpkg", "hello", "alsomissing"}, []string{"nosuchpkg", "alsomissing"}, []string{"unknown package(s): nosuchpkg, alsomissing"}},
		{[]string{"xorg", "xorg.nope"}, []string{"xorg", "xorg.nope"}, []string{"xorg (not a package)"}},
	}
	r := &Runner{Timeout: time.Minute}
	for _, tt := range tests {
		t.Run(strings.Join(tt.packages, ","), func(t *testing.T) {
			req := src
			req.Packages = tt.packages
			_, err := r.Build(context.Background(), req)
			var u *UnknownPackagesError
			if !errors.As(err, &u) {
				t.Fatalf("got %v, want UnknownPackagesError", err)
			}
			if !slices.Equal(u.Packages, tt.want) {
				t.Errorf("unknown %v, want %v", u.Packages, tt.want)
			}
			for _, s := range tt.inError {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q lacks %q", err, s)
				}
			}
		})
	}
}

func TestBuildError(t *testing.T) {
	req := demoSource(t, "broken")
	var mu sync.Mutex
	var lines []string
	r := &Runner{Timeout: time.Minute, Log: func(l string) { mu.Lock(); lines = append(lines, l); mu.Unlock() }}
	_, err := r.Build(context.Background(), req)
	var b *BuildError
	if !errors.As(err, &b) {
		t.Fatalf("got %v, want BuildError", err)
	}
	if !slices.ContainsFunc(b.Tail, func(l string) bool { return strings.Contains(l, "broken on purpose") }) {
		t.Errorf("tail lacks the builder's message:\n%s", strings.Join(b.Tail, "\n"))
	}
	if !strings.Contains(err.Error(), "broken on purpose") {
		t.Errorf("error lacks the builder's message: %v", err)
	}
	if !slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, "broken on purpose") }) {
		t.Errorf("Log did not see the builder's message: %q", lines)
	}

	// A package for another system cannot be built here.
	req.Packages, req.System = []string{"hello"}, "aarch64-linux"
	if _, err := r.Build(context.Background(), req); !errors.As(err, &b) {
		t.Errorf("aarch64 build: got %v, want BuildError", err)
	} else {
		t.Logf("aarch64 build: %v", err)
	}

	// A source that does not exist.
	req.SrcArgs, req.System = filepath.Join(t.TempDir(), "missing"), "x86_64-linux"
	if _, err := r.Build(context.Background(), req); !errors.As(err, &b) {
		t.Errorf("missing source: got %v, want BuildError", err)
	}
}

func TestTimeout(t *testing.T) {
	// Other packages' tests build "slow" too, concurrently: this test's
	// builders carry a marker of their own.
	marker := fmt.Sprintf("nixery-slow-marker-%d", time.Now().UnixNano())
	t.Setenv("NIXERY_SLOW_MARKER", marker)
	req := demoSource(t, "slow")
	tests := []struct {
		name    string
		timeout time.Duration // of the Runner
		ctx     time.Duration // deadline of the caller's context
	}{
		{"Runner.Timeout", 2 * time.Second, 0},
		{"context deadline", 0, 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var pids []int
			var mu sync.Mutex
			var building, markerSeen bool
			r := &Runner{
				Timeout: tt.timeout,
				started: func(cmd *exec.Cmd) { pids = append(pids, cmd.Process.Pid) },
				Log: func(l string) {
					mu.Lock()
					defer mu.Unlock()
					if strings.Contains(l, "nixery-demo-slow: sleeping") {
						building = true
						// The builder is findable by its marker.
						markerSeen = markerSeen || len(processesMatching(marker)) > 0
					}
				},
			}
			ctx := context.Background()
			if tt.ctx > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.ctx)
				defer cancel()
			}
			start := time.Now()
			_, err := r.Build(ctx, req)
			elapsed := time.Since(start)
			if !errors.Is(err, ErrTimeout) {
				t.Fatalf("got %v, want ErrTimeout", err)
			}
			if !strings.Contains(err.Error(), "NIX_TIMEOUT") {
				t.Errorf("error %q does not say how to allow more time", err)
			}
			if elapsed > 8*time.Second {
				t.Errorf("Build returned after %s", elapsed)
			}
			t.Logf("%v (after %s)", err, elapsed.Round(time.Millisecond))
			mu.Lock()
			defer mu.Unlock()
			if !building {
				t.Error("the builder never started: timeout too short to test stopping it")
			}
			for _, pid := range pids {
				if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
					t.Errorf("process group %d still exists (%v)", pid, err)
				}
			}
			// The builder ran in a session of its own; Nix must have
			// stopped it.
			if !markerSeen {
				t.Error("the builder process was not found by its marker while it ran")
			}
			if left := processesMatching(marker); len(left) > 0 {
				t.Errorf("builder processes left: %v", left)
			}
		})
	}
}

// processesMatching returns the pids of live processes whose command line
// contains s.
func processesMatching(s string) []string {
	var pids []string
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		cmdline, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil || !strings.Contains(string(cmdline), s) {
			continue
		}
		if stat, err := os.ReadFile(filepath.Join(d, "stat")); err == nil && strings.Contains(string(stat), ") Z ") {
			continue // a zombie is dead
		}
		pids = append(pids, filepath.Base(d))
	}
	return pids
}

func TestVersion(t *testing.T) {
	if _, err := exec.LookPath("nix-build"); err != nil {
		need.Skip(t, "nix-build not installed")
	}
	v, err := Version(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(v, "Nix") {
		t.Errorf("version %q", v)
	}
}

func TestEmptyRequest(t *testing.T) {
	res, err := (&Runner{}).Build(context.Background(), Request{SrcType: "path", SrcArgs: "/nonexistent"})
	if err != nil || len(res.Roots) != 0 || len(res.Closure) != 0 {
		t.Errorf("got %v, %v; want an empty result", res, err)
	}
}

// TestRootDirProtectsClosure: with RootDir, the realised packages and their
// closure are garbage-collector roots until the directory goes.
func TestRootDirProtectsClosure(t *testing.T) {
	req := demoSource(t, "jq", "curl")
	req.RootDir = filepath.Join(t.TempDir(), "roots")
	os.Mkdir(req.RootDir, 0o755)
	res, err := (&Runner{Timeout: time.Minute}).Build(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	links, _ := filepath.Glob(filepath.Join(req.RootDir, "result*"))
	var targets []string
	for _, l := range links {
		target, err := os.Readlink(l)
		if err != nil {
			t.Fatal(err)
		}
		targets = append(targets, target)
	}
	slices.Sort(targets)
	roots := slices.Sorted(slices.Values(res.Roots))
	if !slices.Equal(targets, roots) {
		t.Fatalf("result links point at %v, roots are %v", targets, roots)
	}
	// Nix refuses to delete a rooted package. Nothing in the demo set
	// refers to jq, so without a root Nix deletes it. (The test does not
	// show that by deleting jq: other packages' tests may be using it.)
	jq := res.Roots[slices.IndexFunc(res.Roots, func(p string) bool { return strings.Contains(p, "-jq-") })]
	out, err := exec.Command("nix-store", "--delete", jq).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "alive") {
		t.Errorf("nix-store --delete %s of a rooted package: %v\n%s", jq, err, out)
	}
}

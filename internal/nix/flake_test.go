package nix

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nixery/nixery/internal/demo/demotest"
)

// python runs python3 -c code from root and reports whether it succeeded.
func python(t *testing.T, root, code string) (bool, string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(root, "bin", "python3"), "-c", code)
	cmd.Env = []string{}
	out, err := cmd.CombinedOutput()
	return err == nil, string(out)
}

// envSet is a package set beside the demo set at demoDir, for the
// corners of language environments: withPackages taking packages from
// the top level (no pkgs), a withPackages spelt in another case on a set
// that is not a package, and attributes without a usable withPackages.
func envSet(t *testing.T, demoDir string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "envs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	expr := `{ ... }: let d = import ` + demoDir + ` { }; in {
		inherit (d) python3 hello fooBar FooBar;
		numpy = d.python3Packages.numpy;
		lang = d.hello // { withPackages = d.python3.withPackages; };
		Tool = { WithPackages = d.python3.withPackages; };
		notfn = d.hello // { withPackages = "not a function"; };
	}`
	if err := os.WriteFile(filepath.Join(dir, "default.nix"), []byte(expr), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestWithPackages(t *testing.T) {
	demoDir := demotest.Set(t)
	r := &Runner{Timeout: 2 * time.Minute, Offline: true}
	build := func(dir string, packages ...string) (*Result, error) {
		return r.Build(context.Background(), Request{SrcType: "path", SrcArgs: dir, Packages: packages, System: "x86_64-linux"})
	}

	res, err := build(demoDir, "python3.withpackages.numpy.requests", "python3")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Roots) != 2 || !strings.HasSuffix(res.Roots[0], "-python3-3.11.6-env") || !strings.HasSuffix(res.Roots[1], "-python3-3.11.6") {
		t.Fatalf("roots %v, want the environment and python3", res.Roots)
	}
	if ok, out := python(t, res.Roots[0], "import numpy, requests"); !ok {
		t.Errorf("the environment does not import numpy and requests: %s", out)
	}
	if ok, out := python(t, res.Roots[1], "import numpy"); ok || !strings.Contains(out, "No module named 'numpy'") {
		t.Errorf("plain python3 imports numpy (%v): %s", ok, out)
	}
	var inClosure []string
	for _, p := range res.Closure {
		inClosure = append(inClosure, p.Path[strings.Index(p.Path, "-")+1:])
	}
	for _, want := range []string{"python3.11-numpy-1.26.4", "python3.11-requests-2.31.0", "python3-3.11.6"} {
		if !slices.Contains(inClosure, want) {
			t.Errorf("closure lacks %s: %v", want, inClosure)
		}
	}

	envs := envSet(t, demoDir)
	for _, name := range []string{
		"python3.withpackages.NUMPY", // members ignore case too
		"lang.withpackages.numpy",    // no lang.pkgs: from the top level
		"tool.withpackages.numpy",    // Tool.WithPackages
	} {
		res, err := build(envs, name)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if ok, out := python(t, res.Roots[0], "import numpy"); !ok {
			t.Errorf("%s does not import numpy: %s", name, out)
		}
	}

	_, err = build(envs, "python3.withpackages.numpy.nope.nada", "hello.withpackages.numpy",
		"python4.withpackages.numpy", "notfn.withpackages.numpy", "lang.withpackages.foobar", "lang.withpackages.hello.python3")
	var u *UnknownPackagesError
	if !errors.As(err, &u) {
		t.Fatalf("got %v, want UnknownPackagesError", err)
	}
	want := []string{"nope", "nada", "hello.withpackages.numpy", "python4", "notfn.withpackages.numpy", "foobar"}
	if !slices.Equal(u.Packages, want) {
		t.Errorf("unknown %q, want %q", u.Packages, want)
	}
	for name, detail := range map[string]string{
		"nope":                     "not in python3.pkgs",
		"hello.withpackages.numpy": "hello has no withPackages",
		"notfn.withpackages.numpy": "notfn has no withPackages",
		"foobar":                   "ambiguous: FooBar, fooBar",
	} {
		if u.Details[name] != detail {
			t.Errorf("%s: detail %q, want %q", name, u.Details[name], detail)
		}
	}
	if msg := err.Error(); !strings.Contains(msg, "nope (not in python3.pkgs), nada (not in python3.pkgs)") {
		t.Errorf("error %q does not name each unknown package", msg)
	}
}

// git runs git in dir.
func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "init.defaultBranch=main"}, args...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestFlake(t *testing.T) {
	dir := demotest.Set(t)
	ctx := context.Background()
	r := &Runner{Timeout: 2 * time.Minute, Offline: true}

	// A directory: locked by the hash of its contents.
	md, err := r.FlakeMetadata(ctx, "path:"+dir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(md.NarHash, "sha256-") || md.Revision != "" || !strings.Contains(md.URL, "narHash=") {
		t.Errorf("metadata of a path flake: %+v", md)
	}
	res, err := r.Build(ctx, Request{SrcType: "flake", SrcArgs: md.URL, Packages: []string{"hello", "python3.withpackages.numpy"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Roots) != 2 || !strings.HasSuffix(res.Roots[0], "-hello-2.12.1") {
		t.Errorf("roots %v", res.Roots)
	}
	if _, err := os.Stat(filepath.Join(dir, "flake.lock")); err == nil {
		t.Error("Nix wrote a flake.lock into the package set")
	}
	// The package search lists a flake's packages too.
	pkgs, err := r.Packages(ctx, SearchRequest{SrcType: "flake", SrcArgs: md.URL})
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, p := range pkgs {
		listed = append(listed, p.Attr)
	}
	for _, want := range []string{"hello", "xorg.xev", "python3Packages.numpy"} {
		if !slices.Contains(listed, want) {
			t.Errorf("search of the flake lacks %s: %v", want, listed)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "NEWS"), []byte("changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	changed, err := r.FlakeMetadata(ctx, "path:"+dir)
	if err != nil {
		t.Fatal(err)
	}
	if changed.NarHash == md.NarHash {
		t.Error("a changed directory kept its hash")
	}

	// A git repository: locked by the commit.
	git(t, dir, "init", "-q")
	git(t, dir, "add", "-A")
	git(t, dir, "commit", "-q", "-m", "demo set")
	rev := git(t, dir, "rev-parse", "HEAD")
	md, err = r.FlakeMetadata(ctx, "git+file://"+dir+"?ref=refs/heads/main&rev="+rev)
	if err != nil {
		t.Fatal(err)
	}
	if md.Revision != rev || md.NarHash == "" {
		t.Errorf("metadata of a git flake: %+v, want revision %s", md, rev)
	}
	if _, err := r.Build(ctx, Request{SrcType: "flake", SrcArgs: md.URL, Packages: []string{"hello"}, System: "x86_64-linux"}); err != nil {
		t.Fatal(err)
	}
}

// TestFlakeOutputs checks where a flake's packages come from and what a
// flake that cannot be locked as it is gets.
func TestFlakeOutputs(t *testing.T) {
	dir := demotest.Set(t)
	ctx := context.Background()
	r := &Runner{Timeout: 2 * time.Minute, Offline: true}
	flake := func(t *testing.T, nix string) (string, error) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "flake.nix"), []byte(nix), 0o644); err != nil {
			t.Fatal(err)
		}
		md, err := r.FlakeMetadata(ctx, "path:"+dir)
		if err != nil {
			return "", err
		}
		return md.URL, nil
	}

	t.Run("packages", func(t *testing.T) {
		url, err := flake(t, `{ outputs = { self }: { packages.x86_64-linux = { inherit (import ./default.nix { system = "x86_64-linux"; }) hello; }; }; }`)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Build(ctx, Request{SrcType: "flake", SrcArgs: url, Packages: []string{"hello"}, System: "x86_64-linux"}); err != nil {
			t.Error(err)
		}
		_, err = r.Build(ctx, Request{SrcType: "flake", SrcArgs: url, Packages: []string{"git"}, System: "x86_64-linux"})
		var u *UnknownPackagesError
		if !errors.As(err, &u) || !slices.Equal(u.Packages, []string{"git"}) {
			t.Errorf("git: %v, want it unknown", err)
		}
	})
	t.Run("legacyPackages first", func(t *testing.T) {
		url, err := flake(t, `{ outputs = { self }: let d = import ./default.nix { system = "x86_64-linux"; }; in {
			packages.x86_64-linux = { hello = d.git; inherit (d) jq; };
			legacyPackages.x86_64-linux = { inherit (d) hello; }; }; }`)
		if err != nil {
			t.Fatal(err)
		}
		res, err := r.Build(ctx, Request{SrcType: "flake", SrcArgs: url, Packages: []string{"hello", "jq"}, System: "x86_64-linux"})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(res.Roots[0], "-hello-2.12.1") || !strings.HasSuffix(res.Roots[1], "-jq-1.7") {
			t.Errorf("roots %v, want legacyPackages' hello and packages' jq", res.Roots)
		}
	})
	t.Run("neither", func(t *testing.T) {
		url, err := flake(t, `{ outputs = { self }: { }; }`)
		if err != nil {
			t.Fatal(err)
		}
		_, err = r.Build(ctx, Request{SrcType: "flake", SrcArgs: url, Packages: []string{"hello"}, System: "aarch64-linux"})
		var b *BuildError
		if !errors.As(err, &b) || !strings.Contains(err.Error(), "neither legacyPackages.aarch64-linux nor packages.aarch64-linux") {
			t.Errorf("got %v, want a BuildError naming the outputs looked for", err)
		}
	})
	t.Run("inputs", func(t *testing.T) {
		other := t.TempDir()
		if err := os.WriteFile(filepath.Join(other, "flake.nix"), []byte(`{ outputs = { self }: { }; }`), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "flake.nix"), []byte(`{ inputs.other.url = "path:`+other+`"; outputs = { self, other }: { }; }`), 0o644); err != nil {
			t.Fatal(err)
		}
		unpinned, err := r.FlakeMetadata(ctx, "path:"+dir)
		if err != nil {
			t.Fatal(err)
		}
		if unpinned.Pinned {
			t.Error("a flake without flake.lock is pinned")
		}
		if _, err := os.Stat(filepath.Join(dir, "flake.lock")); err == nil {
			t.Fatal("Nix wrote a flake.lock into the package set")
		}
		// The input moves: so does the lock graph Nix used.
		if err := os.WriteFile(filepath.Join(other, "NEWS"), []byte("moved\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		moved, err := r.FlakeMetadata(ctx, "path:"+dir)
		if err != nil {
			t.Fatal(err)
		}
		if moved.Locks == unpinned.Locks || moved.NarHash != unpinned.NarHash {
			t.Errorf("a moved input: locks %s → %s, hash %s → %s; want the locks to change, the hash not", unpinned.Locks, moved.Locks, unpinned.NarHash, moved.NarHash)
		}
		// Locked by the flake's own lock file, it is pinned.
		cmd := exec.Command("nix", "--extra-experimental-features", "nix-command flakes", "flake", "lock", "path:"+dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nix flake lock: %v\n%s", err, out)
		}
		pinned, err := r.FlakeMetadata(ctx, "path:"+dir)
		if err != nil {
			t.Fatal(err)
		}
		if !pinned.Pinned || pinned.Locks != moved.Locks {
			t.Errorf("a locked flake: %+v, want pinned with locks %s", pinned, moved.Locks)
		}
	})
}

func TestParseFlakeMetadata(t *testing.T) {
	tests := []struct {
		name, json string
		want       *FlakeMetadata
	}{
		// Nix 2.8, a git flake.
		{"git", `{"description":"d","lastModified":1,"locked":{"lastModified":1,"narHash":"sha256-x","ref":"refs/heads/main","rev":"1168c02863eb460dc3694ad7e5554429a38e7dc9","revCount":2,"type":"git","url":"file:///srv/pkgs"},"locks":{"nodes":{"root":{}},"root":"root","version":7},"original":{"type":"git","url":"file:///srv/pkgs"},"originalUrl":"git+file:///srv/pkgs","path":"/nix/store/w-source","revision":"1168c02863eb460dc3694ad7e5554429a38e7dc9","url":"git+file:///srv/pkgs?ref=refs%2fheads%2fmain&rev=1168c02863eb460dc3694ad7e5554429a38e7dc9"}`,
			&FlakeMetadata{URL: "git+file:///srv/pkgs?ref=refs%2fheads%2fmain&rev=1168c02863eb460dc3694ad7e5554429a38e7dc9", Revision: "1168c02863eb460dc3694ad7e5554429a38e7dc9", NarHash: "sha256-x", Pinned: true}},
		// Current Nix, a path flake (it adds fingerprint, renames nothing).
		{"path", `{"fingerprint":"ab","lastModified":1,"locked":{"lastModified":1,"narHash":"sha256-y","path":"/srv/pkgs","type":"path"},"locks":{"nodes":{"root":{}},"root":"root","version":7},"original":{"path":"/srv/pkgs","type":"path"},"originalUrl":"path:/srv/pkgs","path":"/nix/store/c-source","resolved":{"path":"/srv/pkgs","type":"path"},"resolvedUrl":"path:/srv/pkgs","url":"path:/srv/pkgs?lastModified=1&narHash=sha256-y"}`,
			&FlakeMetadata{URL: "path:/srv/pkgs?lastModified=1&narHash=sha256-y", NarHash: "sha256-y", Pinned: true}},
		// Inputs, but the store path (and so its flake.lock) is gone.
		{"inputs", `{"url":"path:/srv/pkgs?narHash=sha256-y","path":"/nonexistent/store/path","locked":{"narHash":"sha256-y"},"locks":{"nodes":{"a":{},"root":{"inputs":{"a":"a"}}},"root":"root","version":7}}`,
			&FlakeMetadata{URL: "path:/srv/pkgs?narHash=sha256-y", NarHash: "sha256-y"}},
		{"unlocked", `{"url":"path:/srv/pkgs","locked":{"type":"path"}}`, nil},
		{"no locks", `{"url":"path:/srv/pkgs","locked":{"narHash":"sha256-y"}}`, nil},
		{"no url", `{"locked":{"narHash":"sha256-y"}}`, nil},
		{"not json", `error`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseFlakeMetadata([]byte(tt.json), "path:/srv/pkgs", os.ReadFile)
			if tt.want == nil {
				var b *BuildError
				if !errors.As(err, &b) {
					t.Errorf("got %+v, %v; want a BuildError", got, err)
				}
				return
			}
			if err == nil {
				got.Locks = "" // a digest; compared in TestFlakeOutputs
			}
			if err != nil || *got != *tt.want {
				t.Errorf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixery/nixery/internal/demo"
)

// flakeRepo puts the demo set, a flake, into a new git repository
// (busybox committed: a git flake sees only tracked files) and gives the
// branch "two" other packages: hello greets otherwise, and greet exists
// only there. It returns the repository and a function that commits on
// the branch two a hello with another greeting.
func flakeRepo(t *testing.T) (dir string, moveTwo func(greeting string) string) {
	t.Helper()
	busybox, err := demo.FindBusybox()
	if err != nil {
		t.Fatal(err)
	}
	dir = filepath.Join(t.TempDir(), "pkgs")
	if err := demo.Extract(dir, busybox); err != nil {
		t.Fatal(err)
	}
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.org"}, args...)...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	edit := func(file, old, new string) {
		t.Helper()
		path := filepath.Join(dir, file)
		b, err := os.ReadFile(path)
		if err != nil || !strings.Contains(string(b), old) {
			t.Fatalf("%s lacks %q: %v", file, old, err)
		}
		if err := os.WriteFile(path, []byte(strings.Replace(string(b), old, new, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	git("init", "-q", "-b", "main")
	git("add", "-A")
	git("commit", "-q", "-m", "the demo set")
	git("checkout", "-q", "-b", "two")
	edit("default.nix", "echo 'Hello, world!'", "echo 'Hello, flake!'")
	edit("flake.nix", "value = import ./default.nix { inherit system; };",
		"value = let pkgs = import ./default.nix { inherit system; }; in pkgs // { greet = pkgs.hello; };")
	git("commit", "-q", "-am", "two: another greeting, and greet")
	git("checkout", "-q", "main")
	current := "Hello, flake!"
	moveTwo = func(greeting string) string {
		git("checkout", "-q", "two")
		edit("default.nix", "echo '"+current+"'", "echo '"+greeting+"'")
		current = greeting
		git("commit", "-q", "-am", "two: "+greeting)
		rev := git("rev-parse", "HEAD")
		git("checkout", "-q", "main")
		return rev
	}
	return dir, moveTwo
}

// TestFlakeSource serves the demo set from a flake in a local git
// repository with two refs of different packages: the tag selects the
// ref, each ref's commit is its own image, a branch that moves gives a
// new image and a commit keeps its image.
func TestFlakeSource(t *testing.T) {
	needServer(t)
	repo, moveTwo := flakeRepo(t)
	two := strings.TrimSpace(run(t, "git", "-C", repo, "rev-parse", "two"))
	tmp := t.TempDir()
	s, err := start(tmp, filepath.Join(tmp, "storage"),
		"NIXERY_PKGS_FLAKE=git+file://"+repo,
		"NIXERY_CACHE_TTL=0",        // resolve the branch anew on every pull
		"NIX_CONFIG=substituters =", // no binary cache has the demo set
	)
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	accept := "application/vnd.oci.image.manifest.v1+json"
	digest := func(ref string) string {
		t.Helper()
		name, tag, _ := strings.Cut(ref, ":")
		resp, body := s.get(t, "GET", "/v2/"+name+"/manifests/"+tag, accept)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s\n%s", ref, resp.StatusCode, body, tail(s.log.String(), 30))
		}
		return resp.Header.Get("Docker-Content-Digest")
	}
	greeting := func(ref string) string {
		t.Helper()
		return strings.TrimSpace(run(t, "chroot", pullFrom(t, s, ref), "hello"))
	}

	if got := greeting("shell/hello"); got != "Hello, world!" {
		t.Errorf("hello (latest: main) greets %q", got)
	}
	if got := greeting("shell/hello:two"); got != "Hello, flake!" {
		t.Errorf("hello:two greets %q", got)
	}
	if digest("shell/hello:latest") == digest("shell/hello:two") {
		t.Error("the two refs gave the same image")
	}
	// greet is a package of the ref two only.
	if out := strings.TrimSpace(run(t, "chroot", pullFrom(t, s, "greet:two"), "hello")); out != "Hello, flake!" {
		t.Errorf("greet:two greets %q", out)
	}
	resp, body := s.get(t, "GET", "/v2/greet/manifests/latest", accept)
	if resp.StatusCode != 404 || !strings.Contains(string(body), "MANIFEST_UNKNOWN") || !strings.Contains(string(body), "greet") {
		t.Errorf("greet:latest: %d %s", resp.StatusCode, body)
	}
	resp, body = s.get(t, "GET", "/v2/hello/manifests/three", accept)
	if resp.StatusCode != 404 || !strings.Contains(string(body), "MANIFEST_UNKNOWN") || !strings.Contains(string(body), `named \"three\"`) {
		t.Errorf("hello:three: %d %s", resp.StatusCode, body)
	}

	// The branch moves: a new image; its old commit keeps its image.
	pinned := digest("shell/hello:" + two)
	if pinned != digest("shell/hello:two") {
		t.Error("the commit of two and two gave different images")
	}
	moved := moveTwo("Hello, again!")
	if got := greeting("shell/hello:two"); got != "Hello, again!" {
		t.Errorf("hello:two after the branch moved greets %q", got)
	}
	if digest("shell/hello:two") != digest("shell/hello:"+moved) || digest("shell/hello:two") == pinned {
		t.Error("the moved branch did not give the image of its new commit")
	}
	if digest("shell/hello:"+two) != pinned {
		t.Error("the old commit's image changed")
	}
	if got := greeting("shell/hello:" + two); got != "Hello, flake!" {
		t.Errorf("hello at the old commit greets %q", got)
	}
}

// TestPythonEnvironment pulls a language environment and the plain
// python3 from the demo set: only the first imports numpy.
func TestPythonEnvironment(t *testing.T) {
	needServer(t)
	python := func(rootfs, code string) (bool, string) {
		out, err := exec.Command("chroot", rootfs, "python3", "-c", code).CombinedOutput()
		return err == nil, string(out)
	}
	env := pull(t, "shell/python3.withpackages.numpy")
	if ok, out := python(env, "import numpy"); !ok {
		t.Errorf("the environment does not import numpy: %s", out)
	}
	if ok, out := python(env, "import requests"); ok || !strings.Contains(out, "No module named 'requests'") {
		t.Errorf("the environment of numpy imports requests (%v): %s", ok, out)
	}
	plain := pull(t, "shell/python3")
	if ok, out := python(plain, "import numpy"); ok || !strings.Contains(out, "ModuleNotFoundError: No module named 'numpy'") {
		t.Errorf("plain python3 imports numpy (%v): %s", ok, out)
	}
	if out := inImage(t, plain, "python3 --version"); !strings.Contains(out, "Python 3.11.6") {
		t.Errorf("python3 --version: %q", out)
	}
	both := pull(t, "python3.withpackages.requests.numpy/coreutils")
	if ok, out := python(both, "import numpy, requests"); !ok {
		t.Errorf("the environment of numpy and requests: %s", out)
	}

	for _, tt := range []struct {
		name   string
		status int
		want   []string
	}{
		{"shell/python3.withpackages.numpy.nope.nada", 404, []string{"MANIFEST_UNKNOWN", "nope (not in python3.pkgs)", "nada (not in python3.pkgs)"}},
		{"hello.withpackages.numpy", 404, []string{"MANIFEST_UNKNOWN", "hello has no withPackages"}},
		{"python3.withpackages", 400, []string{"NAME_INVALID", "after withpackages"}},
	} {
		resp, body := get(t, "GET", "/v2/"+tt.name+"/manifests/latest", "")
		if resp.StatusCode != tt.status {
			t.Errorf("%s: %d %s, want %d", tt.name, resp.StatusCode, body, tt.status)
		}
		for _, w := range tt.want {
			if !strings.Contains(string(body), w) {
				t.Errorf("%s: %s lacks %q", tt.name, body, w)
			}
		}
	}
	// The same environment in another order is the same image.
	a, _ := get(t, "GET", "/v2/python3.withpackages.numpy.requests/coreutils/manifests/latest", "application/vnd.oci.image.manifest.v1+json")
	b, _ := get(t, "GET", "/v2/coreutils/python3.withpackages.requests.numpy.numpy/manifests/latest", "application/vnd.oci.image.manifest.v1+json")
	if a.StatusCode != 200 || a.Header.Get("Docker-Content-Digest") != b.Header.Get("Docker-Content-Digest") {
		t.Errorf("the same environment in another order: %d %s, %s", a.StatusCode, a.Header.Get("Docker-Content-Digest"), b.Header.Get("Docker-Content-Digest"))
	}
}

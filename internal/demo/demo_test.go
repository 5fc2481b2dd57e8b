package demo

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixery/nixery/internal/need"
)

// setup extracts the package set into a temporary directory, or skips the
// test if Nix or a static busybox is missing.
func setup(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("nix-build"); err != nil {
		need.Skip(t, "nix-build not installed")
	}
	bb, err := FindBusybox()
	if err != nil {
		need.Skip(t, err)
	}
	// No internet here: don't let Nix spend seconds asking a binary cache.
	t.Setenv("NIX_CONFIG", "substituters =")
	dir := t.TempDir()
	if err := Extract(dir, bb); err != nil {
		t.Fatal(err)
	}
	return dir
}

func nixBuild(t *testing.T, dir string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nix-build", append([]string{dir, "--no-out-link"}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nix-build %v: %v\n%s", args, err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

func TestHello(t *testing.T) {
	dir := setup(t)
	out := nixBuild(t, dir, "-A", "hello")
	cmd := exec.Command(filepath.Join(out, "bin", "hello"))
	cmd.Env = []string{} // runs without PATH: only store paths
	got, err := cmd.Output()
	if err != nil {
		t.Fatalf("run hello: %v", err)
	}
	if string(got) != "Hello, world!\n" {
		t.Errorf("hello printed %q", got)
	}

	// hello refers to libcommon, which refers to busybox.
	refs, err := exec.Command("nix-store", "--query", "--requisites", out).Output()
	if err != nil {
		t.Fatal(err)
	}
	if n := len(strings.Fields(string(refs))); n < 3 {
		t.Errorf("closure of hello has %d paths, want at least 3:\n%s", n, refs)
	}
}

func TestPrograms(t *testing.T) {
	dir := setup(t)
	tests := []struct {
		attr, program string
		args          []string
		stdin, want   string
	}{
		{"bashInteractive", "bash", []string{"-c", "echo $((6 * 7))"}, "", "42\n"},
		{"bashInteractive", "sh", []string{"-c", "echo sh"}, "", "sh\n"},
		{"coreutils", "echo", []string{"hi"}, "", "hi\n"},
		{"coreutils", "wc", []string{"-l"}, "a\nb\n", "2\n"},
		{"moreutils", "sponge", nil, "soaked\n", "soaked\n"},
		{"jq", "jq", nil, `{"a":1}`, `{"a":1}`},
		{"git", "git", []string{"--version"}, "", "git version 2.42.0\n"},
		{"python3", "python3", []string{"--version"}, "", "Python 3.11.6\n"},
		{"fooBar", "foo-bar", nil, "", "fooBar\n"},
		{"FooBar", "Foo-Bar", nil, "", "FooBar\n"},
	}
	for _, tt := range tests {
		t.Run(tt.attr+"/"+tt.program, func(t *testing.T) {
			out := nixBuild(t, dir, "-A", tt.attr)
			cmd := exec.Command(filepath.Join(out, "bin", tt.program), tt.args...)
			cmd.Env = []string{}
			cmd.Stdin = strings.NewReader(tt.stdin)
			got, err := cmd.Output()
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			if string(got) != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestNestedAndData(t *testing.T) {
	dir := setup(t)
	xev := nixBuild(t, dir, "-A", "xorg.xev")
	refs, err := exec.Command("nix-store", "--query", "--references", xev).Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(refs), "-libX11-") {
		t.Errorf("xev does not refer to libX11:\n%s", refs)
	}

	cacert := nixBuild(t, dir, "-A", "cacert")
	pem, err := os.ReadFile(filepath.Join(cacert, "etc/ssl/certs/ca-bundle.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(pem), "-----BEGIN CERTIFICATE-----") {
		t.Errorf("ca-bundle.crt holds no certificate")
	}
}

func TestEveryPackageHasMeta(t *testing.T) {
	dir := setup(t)
	// Also checks that the set takes nixpkgs' arguments and other systems.
	expr := `let pkgs = import ` + dir + ` { system = "aarch64-linux"; config = {}; overlays = []; };
		attrs = set: builtins.filter (n: (set.${n}.type or "") == "derivation") (builtins.attrNames set);
		bad = set: builtins.filter (n: (set.${n}.meta.description or "") == "" || set.${n}.system != "aarch64-linux") (attrs set);
	in bad pkgs ++ bad pkgs.xorg ++ bad pkgs.python3Packages`
	out, err := exec.Command("nix-instantiate", "--eval", "--strict", "--json", "-E", expr).CombinedOutput()
	if err != nil {
		t.Fatalf("nix-instantiate: %v\n%s", err, out)
	}
	if strings.TrimSpace(string(out)) != "[]" {
		t.Errorf("packages without meta.description or the requested system: %s", out)
	}
}

func TestBroken(t *testing.T) {
	dir := setup(t)
	out, err := exec.Command("nix-build", dir, "-A", "broken", "--no-out-link").CombinedOutput()
	if err == nil {
		t.Fatal("broken built successfully")
	}
	if !strings.Contains(string(out), "this package is broken on purpose") {
		t.Errorf("output does not explain the failure:\n%s", out)
	}
}

func TestExtractIdempotent(t *testing.T) {
	bb, err := FindBusybox()
	if err != nil {
		need.Skip(t, err)
	}
	dir := t.TempDir()
	for i := 0; i < 2; i++ {
		if err := Extract(dir, bb); err != nil {
			t.Fatal(err)
		}
	}
	fi, err := os.Stat(filepath.Join(dir, "bootstrap", "busybox"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o555 {
		t.Errorf("busybox mode %v, want 0555", fi.Mode().Perm())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".tmp-") {
			t.Errorf("leftover temporary file %s", e.Name())
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "default.nix")); err != nil {
		t.Error(err)
	}
}

// TestPythonEnvironment checks python3.withPackages the way nixpkgs has
// it: the environment's python3 imports the packages named, the plain
// python3 does not, and both tell a missing module as Python does.
func TestPythonEnvironment(t *testing.T) {
	dir := setup(t)
	python := nixBuild(t, dir, "-A", "python3")
	expr := filepath.Join(t.TempDir(), "env.nix")
	if err := os.WriteFile(expr, []byte(`let pkgs = import `+dir+` {}; in pkgs.python3.withPackages (ps: [ ps.numpy ps.requests ])`), 0o644); err != nil {
		t.Fatal(err)
	}
	env := nixBuild(t, expr)
	run := func(root, code string) (string, error) {
		cmd := exec.Command(filepath.Join(root, "bin", "python3"), "-c", code)
		cmd.Env = []string{}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	tests := []struct {
		root, code string
		ok         bool
		output     string
	}{
		{env, "import numpy", true, ""},
		{env, "import numpy, requests; import numpy", true, ""},
		{env, "import module7", true, ""}, // the standard library
		{python, "import module7", true, ""},
		{python, "import numpy", false, "ModuleNotFoundError: No module named 'numpy'"},
		{env, "import scipy", false, "ModuleNotFoundError: No module named 'scipy'"},
		{env, "print(1)", false, "only import statements"},
	}
	for _, tt := range tests {
		out, err := run(tt.root, tt.code)
		if (err == nil) != tt.ok || !strings.Contains(out, tt.output) {
			t.Errorf("%s -c %q: %v, %q; want success %v and %q", tt.root, tt.code, err, out, tt.ok, tt.output)
		}
	}
	// The environment is a package of its own that refers to python3
	// and to the packages.
	refs, err := exec.Command("nix-store", "--query", "--references", env).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{python, "-python3.11-numpy-1.26.4", "-python3.11-requests-2.31.0"} {
		if !strings.Contains(string(refs), want) {
			t.Errorf("environment does not refer to %s:\n%s", want, refs)
		}
	}
}

// TestFlake evaluates the set through its flake.nix for both systems,
// with flakes enabled only for this command, as Nixery does.
func TestFlake(t *testing.T) {
	dir := setup(t)
	expr := `let f = builtins.getFlake "path:` + dir + `"; in
		map (s: [ f.legacyPackages.${s}.hello.system (f.legacyPackages.${s}.python3.withPackages (ps: [ ps.numpy ])).system ])
			[ "x86_64-linux" "aarch64-linux" ]`
	out, err := exec.Command("nix-instantiate", "--extra-experimental-features", "nix-command flakes",
		"--eval", "--strict", "--json", "--expr", expr).CombinedOutput()
	if err != nil {
		t.Fatalf("nix-instantiate: %v\n%s", err, out)
	}
	want := `[["x86_64-linux","x86_64-linux"],["aarch64-linux","aarch64-linux"]]`
	if got := strings.TrimSpace(string(out)); got != want {
		t.Errorf("systems %s, want %s", got, want)
	}
	// Nix wrote no lock file into the set: it has no inputs to lock.
	if _, err := os.Stat(filepath.Join(dir, "flake.lock")); err == nil {
		t.Error("evaluating the flake wrote a flake.lock")
	}
}

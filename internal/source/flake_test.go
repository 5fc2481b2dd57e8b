package source

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nixery/nixery/internal/need"
	"github.com/nixery/nixery/internal/nix"
)

func TestParseFlakeRef(t *testing.T) {
	commit := "0123456789abcdef0123456789abcdef01234567"
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "flake.nix"), []byte("{ outputs = _: { }; }"), 0o644)
	tests := []struct {
		in              string
		kind, repo      string
		ref, rev        string
		str             string // String(); "" for the input itself
		atBranch, atRev string // at("refs/heads/b", "") and at("", commit)
		err             string
	}{
		{in: "github:org/pkgs", kind: "github", repo: "https://github.com/org/pkgs",
			atBranch: "github:org/pkgs/refs/heads/b", atRev: "github:org/pkgs/" + commit},
		{in: "github:org/pkgs/nixos-24.11", kind: "github", repo: "https://github.com/org/pkgs", ref: "nixos-24.11"},
		{in: "github:org/pkgs/" + commit, kind: "github", repo: "https://github.com/org/pkgs", rev: commit},
		{in: "github:org/pkgs?dir=sub&host=git.example.org", kind: "github", repo: "https://git.example.org/org/pkgs",
			str: "github:org/pkgs?dir=sub&host=git.example.org", atRev: "github:org/pkgs/" + commit + "?dir=sub&host=git.example.org"},
		{in: "github:org/pkgs?ref=main", kind: "github", repo: "https://github.com/org/pkgs", ref: "main", str: "github:org/pkgs/main"},
		{in: "gitlab:group%2Fsub/pkgs", kind: "gitlab", repo: "https://gitlab.com/group/sub/pkgs"},
		{in: "sourcehut:~user/pkgs", kind: "sourcehut", repo: "https://git.sr.ht/~user/pkgs"},
		{in: "git+https://alice:tok@example.org/pkgs.git", kind: "git", repo: "https://alice:tok@example.org/pkgs.git",
			atBranch: "git+https://alice:tok@example.org/pkgs.git?ref=refs%2Fheads%2Fb", atRev: "git+https://alice:tok@example.org/pkgs.git?rev=" + commit},
		{in: "git+file:///srv/pkgs?ref=refs/heads/stable&dir=nix", kind: "git", repo: "file:///srv/pkgs", ref: "refs/heads/stable",
			str: "git+file:///srv/pkgs?dir=nix&ref=refs%2Fheads%2Fstable", atRev: "git+file:///srv/pkgs?dir=nix&rev=" + commit},
		{in: "git+ssh://git@example.org/pkgs?rev=" + commit, kind: "git", repo: "ssh://git@example.org/pkgs", rev: commit},
		{in: "path:" + dir, str: "path:" + dir},
		{in: "path:" + dir + "/./", str: "path:" + dir},
		{in: "tarball+https://example.org/pkgs.tar.gz"},
		{in: "flake:nixpkgs"},

		{in: dir, err: "give its type"},
		{in: "nixpkgs", err: "flake:nixpkgs"},
		{in: "./pkgs", err: "give its type"},
		{in: "github:org", err: "owner/repo"},
		{in: "github:/pkgs", err: "owner/repo"},
		{in: "git+https://", err: "git+ takes a URL"},
		{in: "git+file:///srv/pkgs#hello", err: "fragment"},
		{in: "git+file:///srv/pkgs?rev=abc", err: "40-digit"},
		{in: "path:" + filepath.Join(dir, "nope"), err: "no flake.nix"},
		{in: "git+https://alice:tok@example.org/pkgs.git?rev=1", err: "alice:xxxxx@"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			f, err := parseFlakeRef(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || strings.Contains(err.Error(), "tok@") {
					t.Errorf("parseFlakeRef(%q) = %+v, %v; want an error with %q (and no credentials)", tt.in, f, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if f.kind != tt.kind || f.repo != tt.repo || f.ref != tt.ref || f.rev != tt.rev {
				t.Errorf("parseFlakeRef(%q) = %+v", tt.in, f)
			}
			str := tt.str
			if str == "" {
				str = tt.in
			}
			if f.String() != str {
				t.Errorf("String() = %q, want %q", f.String(), str)
			}
			if tt.atBranch != "" && f.at("refs/heads/b", "") != tt.atBranch {
				t.Errorf("at(branch) = %q, want %q", f.at("refs/heads/b", ""), tt.atBranch)
			}
			if tt.atRev != "" && f.at("", commit) != tt.atRev {
				t.Errorf("at(commit) = %q, want %q", f.at("", commit), tt.atRev)
			}
		})
	}
}

// flakeRepo makes a git repository holding a flake whose packages differ
// by branch: main has one, the branch "two" and the tag v2 two. Nothing
// is built: the flake's packages are never evaluated here.
func flakeRepo(t *testing.T) (dir, main, two string) {
	t.Helper()
	for _, tool := range []string{"git", "nix"} {
		need.Tool(t, tool)
	}
	dir = t.TempDir()
	git := gitIn(t, dir)
	flake := func(names string) {
		os.WriteFile(filepath.Join(dir, "flake.nix"), []byte(`{ outputs = { self }: { legacyPackages.x86_64-linux = { `+names+` }; }; }`), 0o644)
	}
	git("init", "-q", "-b", "main")
	flake("one = 1;")
	git("add", ".")
	git("commit", "-qm", "one")
	main = git("rev-parse", "HEAD")
	git("checkout", "-qb", "two")
	flake("one = 1; two = 2;")
	git("commit", "-qam", "two")
	git("tag", "-a", "-m", "two", "v2")
	two = git("rev-parse", "HEAD")
	git("checkout", "-q", "main")
	return dir, main, two
}

func TestFlakeSourceGit(t *testing.T) {
	dir, main, two := flakeRepo(t)
	ctx := context.Background()
	s := &FlakeSource{Ref: "git+file://" + dir, TTL: time.Hour}
	ids := map[string]string{}
	for tag, want := range map[string]string{"latest": main, "main": main, "two": two, "v2": two, two: two} {
		r, err := s.Resolve(ctx, tag)
		if err != nil {
			t.Fatalf("Resolve(%q): %v", tag, err)
		}
		if r.Type != "flake" || r.Revision != want || !r.Immutable || !strings.Contains(r.Args, "rev="+want) ||
			r.Identity != "flake:git+file://"+dir+"@"+want {
			t.Errorf("Resolve(%q) = %+v; want revision %s", tag, r, want)
		}
		ids[r.Identity] = tag
	}
	if len(ids) != 2 {
		t.Errorf("identities %v, want one per commit", ids)
	}
	var unknown *nix.UnknownRevisionError
	if _, err := s.Resolve(ctx, "three"); !errors.As(err, &unknown) || !strings.Contains(err.Error(), "flake git+file://") {
		t.Errorf("Resolve(three) = %v, want an UnknownRevisionError of the flake", err)
	}
	// A commit is taken as it is; Nix finds out the repository lacks it.
	var noCommit *nix.UnknownRevisionError
	missing := strings.Repeat("0123456789", 4)
	for i := range 2 { // the second time from the remembered failure
		if _, err := s.Resolve(ctx, missing); !errors.As(err, &noCommit) || noCommit.Rev != missing {
			t.Errorf("Resolve(a commit the repository lacks), %d: %v, want a nix.UnknownRevisionError", i+1, err)
		}
	}

	// A branch that moves gives a new identity once its resolution is
	// older than TTL (here: at once).
	moving := &FlakeSource{Ref: "git+file://" + dir + "?ref=two"}
	before, err := moving.Resolve(ctx, "latest")
	if err != nil || before.Revision != two {
		t.Fatalf("latest of ref=two: %+v, %v", before, err)
	}
	cmd := exec.Command("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "three")
	cmd.Dir = dir
	if err := exec.Command("git", "-C", dir, "checkout", "-q", "two").Run(); err != nil {
		t.Fatal(err)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	after, err := moving.Resolve(ctx, "latest")
	if err != nil || after.Revision == two || after.Identity == before.Identity {
		t.Errorf("after the branch moved: %+v, %v; want a new revision and identity", after, err)
	}
	// The commit it was at is still the image it was.
	if pinned, err := moving.Resolve(ctx, two); err != nil || pinned.Identity != before.Identity {
		t.Errorf("the old commit: %+v, %v; want identity %s", pinned, err, before.Identity)
	}
}

func TestFlakeSourcePath(t *testing.T) {
	dir, _, _ := flakeRepo(t)
	os.RemoveAll(filepath.Join(dir, ".git")) // a plain directory
	ctx := context.Background()
	s := &FlakeSource{Ref: "path:" + dir}
	r, err := s.Resolve(ctx, "latest")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(r.Revision, "sha256-") || r.Identity != "flake:path:"+dir+"@"+r.Revision || !strings.Contains(r.Args, "narHash=") || !r.Immutable {
		t.Errorf("path flake: %+v", r)
	}
	var unknown *nix.UnknownRevisionError
	if _, err := s.Resolve(ctx, "v1"); !errors.As(err, &unknown) || !strings.Contains(err.Error(), "only a flake in git") {
		t.Errorf("Resolve(v1) = %v, want an UnknownRevisionError", err)
	}
	os.WriteFile(filepath.Join(dir, "NEWS"), []byte("new\n"), 0o644)
	if r2, err := s.Resolve(ctx, "latest"); err != nil || r2.Identity == r.Identity {
		t.Errorf("a changed directory: %+v, %v; want a new identity", r2, err)
	}

	// A flake that Nix cannot lock fails, and is not asked again at once.
	os.WriteFile(filepath.Join(dir, "flake.nix"), []byte("{ this is not nix"), 0o644)
	var locks atomic.Int64
	broken := &FlakeSource{Ref: "path:" + dir, locking: func(context.Context, string) { locks.Add(1) }}
	for range 2 {
		if _, err := broken.Resolve(ctx, "latest"); err == nil || !strings.Contains(err.Error(), "flake path:") {
			t.Errorf("broken flake: %v", err)
		}
	}
	if locks.Load() != 1 {
		t.Errorf("a broken flake was locked %d times, want 1", locks.Load())
	}
}

// TestFlakeSingleFlight: pulls of one reference share one locking.
func TestFlakeSingleFlight(t *testing.T) {
	dir, _, _ := flakeRepo(t)
	const n = 8
	var waiting sync.WaitGroup
	waiting.Add(n)
	var locks atomic.Int64
	s := &FlakeSource{Ref: "path:" + dir, TTL: time.Hour,
		waiting: func(string) { waiting.Done() },
		// Hold the locking until every caller waits for it: they must
		// join its flight, not start their own.
		locking: func(context.Context, string) { locks.Add(1); waiting.Wait() },
	}
	var wg sync.WaitGroup
	ids := make([]string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := s.Resolve(context.Background(), "latest")
			if err != nil {
				t.Error(err)
			}
			ids[i] = r.Identity
		}()
	}
	wg.Wait()
	if got := locks.Load(); got != 1 {
		t.Errorf("%d callers started %d lockings, want 1", n, got)
	}
	for _, id := range ids {
		if id != ids[0] {
			t.Errorf("identities differ: %q", ids)
		}
	}
}

// TestFlakeLastWaiterLeaves: a locking nobody waits for any more is
// stopped, and the next caller starts afresh.
func TestFlakeLastWaiterLeaves(t *testing.T) {
	dir, _, _ := flakeRepo(t)
	ctx, cancel := context.WithCancel(context.Background())
	var locks atomic.Int64
	s := &FlakeSource{Ref: "path:" + dir, locking: func(lctx context.Context, _ string) {
		if locks.Add(1) == 1 {
			cancel()
			<-lctx.Done() // the caller has left, and so the locking stops
		}
	}}
	if _, err := s.Resolve(ctx, "latest"); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if _, err := s.Resolve(context.Background(), "latest"); err != nil {
		t.Errorf("the next caller: %v", err)
	}
	if locks.Load() != 2 {
		t.Errorf("%d lockings, want 2", locks.Load())
	}
}

// TestFlakeCredentialsRedacted: a password in a git flake's URL reaches
// git and Nix, and nothing else.
func TestFlakeCredentialsRedacted(t *testing.T) {
	dir, main, _ := flakeRepo(t)
	const password = "s3cr3t-Pa55"
	base := strings.Replace(gitHTTP(t, filepath.Dir(dir)), "http://", "http://alice:"+password+"@", 1)
	s := &FlakeSource{Ref: "git+" + base + "/" + filepath.Base(dir), timeout: 30 * time.Second}
	noSecret := func(what, text string) {
		t.Helper()
		if strings.Contains(text, password) {
			t.Errorf("%s shows the password: %s", what, text)
		}
	}
	noSecret("String", s.String())
	r, err := s.Resolve(context.Background(), "main")
	if err != nil || r.Revision != main {
		t.Fatalf("Resolve(main) over HTTP with credentials: %+v, %v", r, err)
	}
	noSecret("identity", r.Identity)
	if !strings.Contains(r.Args, password) {
		t.Errorf("Nix's arguments lack the credentials it needs: %s", r.Args)
	}
	_, err = s.Resolve(context.Background(), "nope")
	noSecret("unknown revision", err.Error())
	missing := &FlakeSource{Ref: "git+" + base + "/nope.git", timeout: 30 * time.Second}
	_, err = missing.Resolve(context.Background(), "main")
	if err == nil {
		t.Fatal("a missing repository resolved")
	}
	noSecret("git failure", err.Error())
	// A commit git cannot fetch fails in Nix, whose message repeats the URL.
	_, err = s.Resolve(context.Background(), strings.Repeat("0", 40))
	if err == nil {
		t.Fatal("a missing commit resolved")
	}
	noSecret("nix failure", err.Error())
	t.Logf("nix failure: %v", err)
}

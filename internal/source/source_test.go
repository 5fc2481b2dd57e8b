package source

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nixery/nixery/internal/need"
	"github.com/nixery/nixery/internal/nix"
)

func TestParseLsRemote(t *testing.T) {
	out := []byte("ref: refs/heads/main\tHEAD\n" +
		"1111111111111111111111111111111111111111\tHEAD\n" +
		"2222222222222222222222222222222222222222\trefs/heads/v1\n" +
		"3333333333333333333333333333333333333333\trefs/tags/v1\n" +
		"4444444444444444444444444444444444444444\trefs/tags/v2\n" +
		"5555555555555555555555555555555555555555\trefs/tags/v2^{}\n" +
		"6666666666666666666666666666666666666666\trefs/tags/v3\n")
	tests := []struct {
		tag, ref, rev string
		ok            bool
	}{
		{"latest", "refs/heads/main", "1111111111111111111111111111111111111111", true},
		{"v1", "refs/heads/v1", "2222222222222222222222222222222222222222", true}, // a branch wins
		{"v2", "refs/tags/v2", "5555555555555555555555555555555555555555", true},  // annotated: peeled
		{"v3", "refs/tags/v3", "6666666666666666666666666666666666666666", true},
		{"v4", "", "", false},
	}
	for _, tt := range tests {
		r, ok := parseLsRemote(out, tt.tag)
		if ok != tt.ok || r.ref != tt.ref || r.rev != tt.rev {
			t.Errorf("parseLsRemote(%q) = %+v %v, want %s %s %v", tt.tag, r, ok, tt.ref, tt.rev, tt.ok)
		}
	}
}

func TestSourceIdentity(t *testing.T) {
	commit := "0123456789abcdef0123456789abcdef01234567"
	gs := &GitSource{Repository: "/srv/pkgs"}
	r, err := gs.Resolve(context.Background(), commit)
	if err != nil || r.Type != "git" || !r.Immutable || r.Identity != "git:/srv/pkgs@"+commit ||
		r.Args != `{"allRefs":true,"rev":"`+commit+`","url":"/srv/pkgs"}` {
		t.Errorf("git commit: %+v %v", r, err)
	}
}

// TestSourceTags: what each tag selects from a channel and a local path,
// and which tags name nothing.
func TestSourceTags(t *testing.T) {
	commit := "0123456789abcdef0123456789abcdef01234567"
	unstable := ChannelSource{Channel: "nixos-unstable"}
	pinned := ChannelSource{Channel: commit}
	path := PathSource{Path: "/srv/p"}
	tests := []struct {
		src       Source
		tag       string
		args      string // "" for an UnknownRevisionError
		immutable bool
	}{
		{unstable, "latest", "nixos-unstable", false},
		{unstable, "", "nixos-unstable", false},
		{unstable, "nixos-24.11", "nixos-24.11", false},
		{unstable, "nixos-24.05-small", "nixos-24.05-small", false},
		{unstable, "nixos-unstable-small", "nixos-unstable-small", false},
		{unstable, "nixpkgs-unstable", "nixpkgs-unstable", false},
		{unstable, "nixpkgs-24.11-darwin", "nixpkgs-24.11-darwin", false},
		{unstable, "nixos-unstable", "nixos-unstable", false},
		{unstable, commit, commit, true},
		{pinned, "latest", commit, true},
		{pinned, "nixos-24.11", "nixos-24.11", false},
		{unstable, "v1", "", false},
		{unstable, "master", "", false},
		{unstable, "nixos-24.13", "", false},
		{unstable, "nixos-24.1", "", false},
		{unstable, "nixos-2024.11", "", false},
		{unstable, "nixos-24.11-darwin", "", false},
		{unstable, "nixpkgs-24.11", "", false},
		{unstable, "nixos-unstable-", "", false},
		{unstable, "NIXOS-24.11", "", false},
		{unstable, "0123456", "", false},               // a short commit pins nothing
		{unstable, strings.ToUpper(commit), "", false}, // nor an upper-case one
		{unstable, commit + "0", "", false},
		{path, "latest", "/srv/p", false},
		{path, "", "/srv/p", false},
		{path, "v1", "", false},
		{path, commit, "", false},
	}
	for _, tt := range tests {
		r, err := tt.src.Resolve(context.Background(), tt.tag)
		if tt.args == "" {
			var unknown *nix.UnknownRevisionError
			if !errors.As(err, &unknown) || !strings.Contains(err.Error(), strconv.Quote(tt.tag)) {
				t.Errorf("%s, tag %q: %+v, %v; want an UnknownRevisionError naming the tag", tt.src, tt.tag, r, err)
			}
			continue
		}
		wantType := map[bool]string{true: "path", false: "nixpkgs"}[tt.src == path]
		if err != nil || r.Type != wantType || r.Args != tt.args || r.Identity != wantType+":"+tt.args || r.Immutable != tt.immutable {
			t.Errorf("%s, tag %q: %+v, %v; want args %q, immutable %v", tt.src, tt.tag, r, err, tt.args, tt.immutable)
		}
		if tt.immutable && r.Revision != tt.args {
			t.Errorf("%s, tag %q: revision %q", tt.src, tt.tag, r.Revision)
		}
	}
}

// gitRepo makes a repository with a branch main, a lightweight tag v1 and
// an annotated tag v2, and returns it with the commits.
// gitIn returns a function that runs git in dir, with a fixed author,
// and fails t if git does.
func gitIn(t *testing.T, dir string) func(args ...string) string {
	return func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
}

func gitRepo(t *testing.T) (dir, c1, c2 string) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		need.Skip(t, "git is not installed")
	}
	dir = t.TempDir()
	git := gitIn(t, dir)
	git("init", "-q", "-b", "main")
	os.WriteFile(filepath.Join(dir, "default.nix"), []byte("{...}: {}\n"), 0o644)
	git("add", ".")
	git("commit", "-qm", "one")
	git("tag", "v1")
	c1 = git("rev-parse", "HEAD")
	os.WriteFile(filepath.Join(dir, "default.nix"), []byte("{...}: { }\n"), 0o644)
	git("commit", "-qam", "two")
	git("tag", "-a", "-m", "two", "v2")
	c2 = git("rev-parse", "HEAD")
	return dir, c1, c2
}

func TestGitSourceResolve(t *testing.T) {
	ctx := context.Background()
	dir, c1, c2 := gitRepo(t)
	gs := &GitSource{Repository: dir, TTL: time.Hour}
	for tag, want := range map[string]string{"v1": c1, "v2": c2, "latest": c2, "main": c2} {
		r, err := gs.Resolve(ctx, tag)
		if err != nil || r.Revision != want || !r.Immutable || !strings.Contains(r.Args, want) {
			t.Errorf("Resolve(%q) = %+v, %v; want revision %s", tag, r, err, want)
		}
	}
	var unknown *nix.UnknownRevisionError
	if _, err := gs.Resolve(ctx, "v9"); !errors.As(err, &unknown) {
		t.Errorf("Resolve(v9) = %v, want UnknownRevisionError", err)
	}
	missing := &GitSource{Repository: filepath.Join(dir, "nope")}
	if _, err := missing.Resolve(ctx, "latest"); err == nil || errors.As(err, &unknown) {
		t.Errorf("missing repository: %v", err)
	}
}

// URI names each kind of source for documents, credentials removed.
func TestResolvedURI(t *testing.T) {
	for _, tt := range []struct {
		r    Resolved
		want string
	}{
		{Resolved{Type: "git", Args: `{"url":"https://user:token@git.example.org/pkgs.git","rev":"abc"}`}, "git+https://git.example.org/pkgs.git"},
		{Resolved{Type: "git", Args: `{"url":"/srv/pkgs","rev":"abc"}`}, "git+file:///srv/pkgs"},
		{Resolved{Type: "git", Args: `{"url":"ssh://git@host/repo"}`}, "git+ssh://host/repo"},
		{Resolved{Type: "git", Args: `not json`}, ""},
		{Resolved{Type: "flake", Args: "git+https://user:pw@host/repo?rev=0123"}, "git+https://host/repo?rev=0123"},
		{Resolved{Type: "nixpkgs", Args: "nixos-24.11"}, "https://github.com/NixOS/nixpkgs/archive/nixos-24.11.tar.gz"},
		{Resolved{Type: "path", Args: "/srv/pkgs"}, ""},
	} {
		if got := tt.r.URI(); got != tt.want {
			t.Errorf("%s %s: URI %q, want %q", tt.r.Type, tt.r.Args, got, tt.want)
		}
	}
}

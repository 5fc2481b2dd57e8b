package nix

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nixery/nixery/internal/need"
)

// gitServer serves the repositories under root over git's smart HTTP
// protocol (git http-backend) on 127.0.0.1 and returns its URL. A
// strict server is what older or stricter git servers are: it speaks
// protocol v0 only (the client's Git-Protocol header is dropped), and
// none of uploadpack.allow{Tip,Reachable,Any}SHA1InWant is set, so a
// client may fetch only what the server advertises, the tips of its
// branches and tags. (Protocol v2 lets a client ask for any commit.)
func gitServer(t *testing.T, root string, strict bool) string {
	t.Helper()
	need.Tool(t, "git")
	execPath, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"}
	if strict {
		env = append(env, "GIT_CONFIG_COUNT=3",
			"GIT_CONFIG_KEY_0=uploadpack.allowTipSHA1InWant", "GIT_CONFIG_VALUE_0=false",
			"GIT_CONFIG_KEY_1=uploadpack.allowReachableSHA1InWant", "GIT_CONFIG_VALUE_1=false",
			"GIT_CONFIG_KEY_2=uploadpack.allowAnySHA1InWant", "GIT_CONFIG_VALUE_2=false")
	}
	backend := &cgi.Handler{Path: filepath.Join(strings.TrimSpace(string(execPath)), "git-http-backend"), Env: env, Stderr: io.Discard}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strict {
			r.Header.Del("Git-Protocol")
		}
		backend.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// privateGitCache gives Nix a cache directory of its own, so that it
// fetches from the server instead of finding the commits in the cache
// of an earlier run.
func privateGitCache(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
}

// gitSet commits a package set with one package, hello-<version> (a
// derivation that is never built), to the repository dir.
func gitSet(t *testing.T, dir, version string) string {
	t.Helper()
	set := fmt.Sprintf(`{ ... }: { hello = derivation { name = "hello-%s"; system = "x86_64-linux"; builder = "/bin/sh"; }; }`+"\n", version)
	if err := os.WriteFile(filepath.Join(dir, "default.nix"), []byte(set), 0o644); err != nil {
		t.Fatal(err)
	}
	git(t, dir, "add", ".")
	git(t, dir, "commit", "-qm", "hello "+version)
	return git(t, dir, "rev-parse", "HEAD")
}

// A git package set fetched over the network: git's progress meters
// (Nix 2.33 and later run git fetch --progress) reach the log as lines
// of their final state, not as one line of carriage returns cut at
// MaxLineBytes.
func TestGitFetchProgress(t *testing.T) {
	needNix(t)
	root := t.TempDir()
	repo := filepath.Join(root, "pkgs")
	os.Mkdir(repo, 0o755)
	git(t, repo, "init", "-q")
	// Enough objects for git to draw its meters.
	for i := range 2000 {
		os.WriteFile(filepath.Join(repo, fmt.Sprintf("f%d", i)), []byte(fmt.Sprintf("file %d\n", i)), 0o644)
	}
	rev := gitSet(t, repo, "1")
	url := gitServer(t, root, false) + "/pkgs"
	privateGitCache(t)

	var mu sync.Mutex
	var lines []string
	r := &Runner{Timeout: time.Minute, Offline: true, Log: func(l string) { mu.Lock(); lines = append(lines, l); mu.Unlock() }}
	res, err := r.Resolve(context.Background(), ResolveRequest{SrcType: "git", Names: []string{"hello"},
		SrcArgs: `{"url":"` + url + `","ref":"refs/heads/main","rev":"` + rev + `"}`})
	if err != nil || len(res) != 1 {
		t.Fatalf("got %v, %v", res, err)
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("log:\n%s", strings.Join(lines, "\n"))
	for _, l := range lines {
		if strings.Contains(l, "\r") || strings.Contains(l, "[line cut") || strings.Count(l, "objects:") > 1 {
			t.Errorf("a line of %d bytes: %.200q…", len(l), l)
		}
		if strings.Contains(l, "objects:") && !strings.HasSuffix(l, "done.") {
			t.Errorf("a meter's line is not its final state: %q", l)
		}
	}
}

// A git package set resolved to a branch or tag ({"ref","rev"}, as
// config's GitSource resolves it) or to a commit ({"rev","allRefs"})
// is fetched from a strict server (see gitServer) on every Nix, also
// when the commit is no longer the tip of its branch, the server not
// advertising it: Nix 2.20 and later fetch a commit they are given by
// itself, which such a server refuses; Nix 2.8 fetched the ref.
func TestGitStrictServer(t *testing.T) {
	needNix(t)
	root := t.TempDir()
	repo := filepath.Join(root, "pkgs")
	os.Mkdir(repo, 0o755)
	git(t, repo, "init", "-q")
	one := gitSet(t, repo, "1")
	git(t, repo, "tag", "-a", "-m", "release one", "v1")
	two := gitSet(t, repo, "2")
	url := gitServer(t, root, true) + "/pkgs"

	for _, tt := range []struct {
		name, args, version string
	}{
		{"branch, at its tip", `"ref":"refs/heads/main","rev":"` + two + `"`, "2"},
		{"branch, since moved on", `"ref":"refs/heads/main","rev":"` + one + `"`, "1"},
		{"annotated tag", `"ref":"refs/tags/v1","rev":"` + one + `"`, "1"},
		{"commit", `"rev":"` + one + `","allRefs":true`, "1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			privateGitCache(t)
			var mu sync.Mutex
			var lines []string
			r := &Runner{Timeout: time.Minute, Offline: true, Log: func(l string) { mu.Lock(); lines = append(lines, l); mu.Unlock() }}
			res, err := r.Resolve(context.Background(), ResolveRequest{SrcType: "git", Names: []string{"hello"},
				SrcArgs: `{"url":"` + url + `",` + tt.args + `}`})
			if err != nil || len(res) != 1 || len(res[0].Outputs) != 1 || !strings.HasSuffix(res[0].Outputs[0], "-hello-"+tt.version) {
				mu.Lock()
				defer mu.Unlock()
				t.Fatalf("got %+v, %v; want hello-%s\n%s", res, err, tt.version, strings.Join(lines, "\n"))
			}
		})
	}

	// A commit the branch does not have is the package set's unknown
	// commit, whatever the server says of it.
	t.Run("missing commit", func(t *testing.T) {
		privateGitCache(t)
		r := &Runner{Timeout: time.Minute, Offline: true}
		const missing = "0123456789abcdef0123456789abcdef01234567"
		_, err := r.Resolve(context.Background(), ResolveRequest{SrcType: "git", Names: []string{"hello"},
			SrcArgs: `{"url":"` + url + `","ref":"refs/heads/main","rev":"` + missing + `"}`})
		var u *UnknownRevisionError
		if !errors.As(err, &u) || u.Rev != missing {
			t.Errorf("got %v, want an UnknownRevisionError", err)
		}
	})
}

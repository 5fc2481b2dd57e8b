package nix

import (
	"context"
	"errors"
	"io"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nixery/nixery/internal/need"
)

// TestCredentialsRedacted: Nix's messages about a git source repeat its
// URL, and so its credentials; neither the log lines nor the error do.
// The repository is served on 127.0.0.1 by git http-backend, and Nix is
// asked for a commit it lacks, which Nix reports naming the repository
// (the error itself, an UnknownRevisionError, names only the commit).
func TestCredentialsRedacted(t *testing.T) {
	if _, err := exec.LookPath("nix-build"); err != nil {
		need.Skip(t, "nix-build not installed")
	}
	if _, err := exec.LookPath("git"); err != nil {
		need.Skip(t, "git is not installed")
	}
	t.Setenv("NIX_CONFIG", "substituters =")
	root := t.TempDir()
	repo := filepath.Join(root, "pkgs")
	os.Mkdir(repo, 0o755)
	os.WriteFile(filepath.Join(repo, "default.nix"), []byte("{...}: {}\n"), 0o644)
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"add", "."}, {"-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one"}} {
		cmd := exec.Command("git", args...)
		cmd.Dir = repo
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	execPath, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(&cgi.Handler{Path: filepath.Join(strings.TrimSpace(string(execPath)), "git-http-backend"),
		Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"}, Stderr: io.Discard})
	defer srv.Close()

	const password = "s3cr3t-Pa55"
	url := strings.Replace(srv.URL, "http://", "http://alice:"+password+"@", 1) + "/pkgs"
	var mu sync.Mutex
	var lines []string
	r := &Runner{Timeout: time.Minute, Offline: true, Log: func(l string) { mu.Lock(); lines = append(lines, l); mu.Unlock() }}
	_, err = r.Build(context.Background(), Request{SrcType: "git", Packages: []string{"hello"},
		SrcArgs: `{"url":"` + url + `","ref":"main","rev":"0123456789abcdef0123456789abcdef01234567"}`})
	var noRev *UnknownRevisionError
	if !errors.As(err, &noRev) {
		t.Fatalf("got %v, want UnknownRevisionError", err)
	}
	t.Logf("%v", err)
	if strings.Contains(err.Error(), password) {
		t.Errorf("the error shows the password: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, l := range lines {
		if strings.Contains(l, password) {
			t.Errorf("a log line shows the password: %s", l)
		}
	}
	// Nix did name the repository: the redaction was put to work (the
	// same redaction makes the tail of a BuildError).
	if !slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, "alice:xxxxx@127.0.0.1") }) {
		t.Errorf("Nix's messages did not name the repository, redacted:\n%s", strings.Join(lines, "\n"))
	}
}

// A BuildError's tail and its cause show no credentials of URLs.
func TestBuildErrorRedacted(t *testing.T) {
	w := &lineWriter{}
	w.Write([]byte("error: fetching 'https://alice:s3cr3t@git.example/pkgs' failed\n"))
	err := &BuildError{Tail: w.tail, Err: errors.New("git clone https://bob:t0ken@git.example/pkgs: exit status 128")}
	msg := err.Error()
	if strings.Contains(msg, "s3cr3t") || strings.Contains(msg, "t0ken") {
		t.Errorf("the error shows a credential: %s", msg)
	}
	if !strings.Contains(msg, "alice:xxxxx@git.example") || !strings.Contains(msg, "bob:xxxxx@git.example") {
		t.Errorf("the error lost the URLs: %s", msg)
	}
}

package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nixery/nixery/internal/need"
	"github.com/nixery/nixery/internal/nix"
)

// hungRemote is a TCP listener on 127.0.0.1 that accepts connections and
// never answers, like a remote behind a broken proxy. It returns an
// http:// repository URL on it; the port is unique to the test and marks
// the git processes that talk to it.
func hungRemote(t *testing.T) (url, marker string, accepted *atomic.Int64) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		need.Skip(t, "git is not installed")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted = new(atomic.Int64)
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	marker = ln.Addr().String()
	return "http://" + marker + "/pkgs.git", marker, accepted
}

// processesMatching returns the pids of live processes whose command line
// contains s; with children, only those this test process started (not
// git's own children, which are copies of git until they exec).
func processesMatching(s string, children bool) []string {
	var pids []string
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		cmdline, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil || !strings.Contains(string(cmdline), s) {
			continue
		}
		stat, err := os.ReadFile(filepath.Join(d, "stat"))
		if err != nil {
			continue // gone
		}
		// stat: pid (comm) state ppid …; comm may hold spaces.
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(fields) < 2 || fields[0] == "Z" {
			continue // a zombie is dead
		}
		if children && fields[1] != strconv.Itoa(os.Getpid()) {
			continue
		}
		pids = append(pids, filepath.Base(d))
	}
	return pids
}

// TestGitHungRemote: resolutions of many names on a remote that never
// answers all end within the git timeout, run at most maxGitProcesses git
// processes at once, and leave no process behind (git's transport helpers
// included).
func TestGitHungRemote(t *testing.T) {
	url, marker, accepted := hungRemote(t)
	const timeout, grace, n = 2 * time.Second, 5 * time.Second, 20
	var mu sync.Mutex
	maxSeen, starts := 0, 0
	s := &GitSource{Repository: url, TTL: time.Hour, timeout: timeout,
		started: func(int) {
			// Every git process still alive is one that holds a slot: a
			// slot is given back only after Wait has reaped its git.
			seen := len(processesMatching(marker, true))
			mu.Lock()
			defer mu.Unlock()
			starts++
			maxSeen = max(maxSeen, seen)
		}}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, n)
	took := make([]time.Duration, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.Resolve(context.Background(), fmt.Sprintf("tag%d", i))
			took[i] = time.Since(start)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("tag%d: %v, want a timeout", i, err)
		}
		if took[i] > timeout+grace {
			t.Errorf("tag%d returned after %s", i, took[i])
		}
	}
	t.Logf("%d resolutions, %d git processes started, at most %d at once, %d connections; first error: %v", n, starts, maxSeen, accepted.Load(), errs[0])
	if starts == 0 || accepted.Load() == 0 {
		t.Fatal("git never reached the remote: the test tests nothing")
	}
	if maxSeen > 4 { // the documented bound (docs/package-sources.md)
		t.Errorf("%d git processes ran at once, want at most 4", maxSeen)
	}
	if left := processesMatching(marker, false); len(left) > 0 {
		t.Errorf("processes left that talk to the remote: %v", left)
	}
}

// TestGitSingleFlight: pulls of one name share one git process.
func TestGitSingleFlight(t *testing.T) {
	url, marker, _ := hungRemote(t)
	const n = 10
	var waiting sync.WaitGroup
	waiting.Add(n)
	var starts atomic.Int64
	s := &GitSource{Repository: url, timeout: 2 * time.Second,
		waiting: func(string) { waiting.Done() },
		// Hold the git process (which hangs anyway) until every caller
		// waits for it: they must join its flight, not start their own.
		started: func(int) { starts.Add(1); waiting.Wait() },
	}
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Resolve(context.Background(), "main"); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("got %v, want a timeout", err)
			}
		}()
	}
	wg.Wait()
	if got := starts.Load(); got != 1 {
		t.Errorf("%d callers of one name started %d git processes, want 1", n, got)
	}
	if left := processesMatching(marker, false); len(left) > 0 {
		t.Errorf("processes left: %v", left)
	}
}

// TestGitLastWaiterLeaves: when every caller has gone, the resolution is
// stopped and its processes killed, long before the git timeout.
func TestGitLastWaiterLeaves(t *testing.T) {
	url, marker, _ := hungRemote(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	s := &GitSource{Repository: url, timeout: time.Hour,
		started:  func(int) { cancel() },
		finished: func(_ string, err error) { done <- err },
	}
	if _, err := s.Resolve(ctx, "main"); !errors.Is(err, context.Canceled) {
		t.Errorf("Resolve: %v, want context.Canceled", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("flight ended with %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the flight went on after its last waiter left")
	}
	if left := processesMatching(marker, false); len(left) > 0 {
		t.Errorf("processes left: %v", left)
	}
}

// TestGitCaches: a resolved name is reused for TTL and an unknown one for
// the unknown-ref time, without running git; then git runs again.
func TestGitCaches(t *testing.T) {
	dir, _, c2 := gitRepo(t)
	var runs atomic.Int64
	now := time.Unix(1_000_000, 0)
	var clock sync.Mutex
	s := &GitSource{Repository: dir, TTL: time.Minute, unknownTTL: 30 * time.Second,
		now:     func() time.Time { clock.Lock(); defer clock.Unlock(); return now },
		started: func(int) { runs.Add(1) },
	}
	advance := func(d time.Duration) { clock.Lock(); now = now.Add(d); clock.Unlock() }
	ctx := context.Background()
	var unknown *nix.UnknownRevisionError
	steps := []struct {
		tag     string
		advance time.Duration
		runs    int64 // git processes run so far
		known   bool
	}{
		{"v9", 0, 1, false},
		{"v9", 29 * time.Second, 1, false}, // remembered
		{"v9", time.Second, 2, false},      // forgotten: asked again
		{"main", 0, 3, true},
		{"main", 59 * time.Second, 3, true}, // reused
		{"main", time.Second, 4, true},      // asked again
	}
	for i, st := range steps {
		advance(st.advance)
		r, err := s.Resolve(ctx, st.tag)
		if st.known && (err != nil || r.Revision != c2) {
			t.Errorf("step %d: Resolve(%s) = %+v, %v; want %s", i, st.tag, r, err, c2)
		}
		if !st.known && !errors.As(err, &unknown) {
			t.Errorf("step %d: Resolve(%s) = %v, want UnknownRevisionError", i, st.tag, err)
		}
		if got := runs.Load(); got != st.runs {
			t.Errorf("step %d (%s): git ran %d times, want %d", i, st.tag, got, st.runs)
		}
	}
}

func TestLimitedBuffer(t *testing.T) {
	b := &limitedBuffer{max: 5}
	for _, p := range []string{"abc", "defg", "h"} {
		if n, err := b.Write([]byte(p)); n != len(p) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", p, n, err)
		}
	}
	if b.String() != "abcde" || !b.over {
		t.Errorf("kept %q, over %v", b.String(), b.over)
	}
}

// gitHTTP serves the repositories under root over git's smart HTTP
// protocol (git http-backend) on 127.0.0.1, and returns the server's URL.
func gitHTTP(t *testing.T, root string) string {
	t.Helper()
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Fatal(err)
	}
	backend := filepath.Join(strings.TrimSpace(string(out)), "git-http-backend")
	srv := httptest.NewServer(&cgi.Handler{Path: backend, Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"}, Stderr: io.Discard})
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestGitCredentialsRedacted: a password in the repository URL reaches
// git and Nix, and nothing else: not String, not the cache identity (which
// does not change with the credentials), not any error.
func TestGitCredentialsRedacted(t *testing.T) {
	dir, _, c2 := gitRepo(t)
	const password = "s3cr3t-Pa55"
	base := gitHTTP(t, filepath.Dir(dir))
	withCreds := func(user, pass, path string) string {
		return strings.Replace(base, "http://", "http://"+user+":"+pass+"@", 1) + "/" + path
	}
	repo := filepath.Base(dir)
	s := &GitSource{Repository: withCreds("alice", password, repo), TTL: time.Hour, timeout: 10 * time.Second}
	ctx := context.Background()
	noSecret := func(what, text string) {
		t.Helper()
		if strings.Contains(text, password) {
			t.Errorf("%s shows the password: %s", what, text)
		}
		if !strings.Contains(text, "alice:xxxxx@") {
			t.Errorf("%s does not show the redacted URL: %s", what, text)
		}
	}

	noSecret("String", s.String())
	r, err := s.Resolve(ctx, "main")
	if err != nil || r.Revision != c2 {
		t.Fatalf("Resolve(main) over HTTP with credentials: %+v, %v", r, err)
	}
	if want := "git:" + base + "/" + repo + "@" + c2; r.Identity != want {
		t.Errorf("identity %q, want %q (no credentials)", r.Identity, want)
	}
	other := &GitSource{Repository: withCreds("bob", "another-token", repo)}
	if r2, err := other.Resolve(ctx, "main"); err != nil || r2.Identity != r.Identity {
		t.Errorf("other credentials: identity %q, %v; want %q", r2.Identity, err, r.Identity)
	}
	if !strings.Contains(r.Args, password) {
		t.Errorf("Nix's arguments lack the credentials it needs: %s", r.Args)
	}

	var unknown *nix.UnknownRevisionError
	_, err = s.Resolve(ctx, "v9")
	if !errors.As(err, &unknown) {
		t.Fatalf("Resolve(v9): %v, want UnknownRevisionError", err)
	}
	noSecret("unknown revision", err.Error())

	missing := &GitSource{Repository: withCreds("alice", password, "nope.git"), timeout: 10 * time.Second}
	_, err = missing.Resolve(ctx, "main")
	if err == nil || errors.As(err, &unknown) {
		t.Fatalf("missing repository: %v", err)
	}
	noSecret("git failure", err.Error())
	t.Logf("git failure: %v", err)

	hung, _, _ := hungRemote(t)
	slow := &GitSource{Repository: strings.Replace(hung, "http://", "http://alice:"+password+"@", 1), timeout: 200 * time.Millisecond}
	_, err = slow.Resolve(ctx, "main")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hung remote: %v", err)
	}
	noSecret("timeout", err.Error())
	ctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = slow.Resolve(ctx, "main")
	noSecret("cancelled", err.Error())
}

// BenchmarkGitHungRemote measures how long pulls of 20 new tags wait on a
// remote that accepts and never answers, with the real GitTimeout, and
// reports the git processes left afterwards (docs/measurements.md):
//
//	go test ./config -run '^$' -bench GitHungRemote -benchtime 1x
func BenchmarkGitHungRemote(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	marker := ln.Addr().String()
	const n = 20
	var slowest time.Duration
	left := 0
	for range b.N {
		s := &GitSource{Repository: "http://" + marker + "/pkgs.git"}
		start := time.Now()
		var wg sync.WaitGroup
		var mu sync.Mutex
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := s.Resolve(context.Background(), fmt.Sprintf("tag%d", i)); !errors.Is(err, context.DeadlineExceeded) {
					b.Errorf("tag%d: %v", i, err)
				}
				mu.Lock()
				slowest = max(slowest, time.Since(start))
				mu.Unlock()
			}()
		}
		wg.Wait()
		left += len(processesMatching(marker, false))
	}
	b.ReportMetric(slowest.Seconds(), "s-slowest")
	b.ReportMetric(float64(left), "processes-left")
}

package readiness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nixery/nixery/internal/certs"
	"github.com/nixery/nixery/internal/certs/certstest"
	"github.com/nixery/nixery/internal/need"
	"github.com/nixery/nixery/internal/storage"
)

// syncBuffer is a log sink for the checker's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// brokenStore answers every object read with an outage.
type brokenStore struct{ storage.Backend }

func (brokenStore) GetObject(context.Context, string) ([]byte, error) {
	return nil, errors.New("connection refused")
}

// countingStore counts the readiness probe's reads and tells of each.
type countingStore struct {
	storage.Backend
	reads atomic.Int64
	read  chan struct{}
}

func (c *countingStore) GetObject(ctx context.Context, name string) ([]byte, error) {
	c.reads.Add(1)
	if c.read != nil {
		select {
		case c.read <- struct{}{}:
		default:
		}
	}
	return c.Backend.GetObject(ctx, name)
}

func probe(t *testing.T, h *Checker, ctx context.Context) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.Readyz(rec, httptest.NewRequest("GET", "/readyz", nil).WithContext(ctx))
	return rec.Code, rec.Body.String()
}

func TestReadyz(t *testing.T) {
	need.Tool(t, "nix-build") // the healthy case runs real Nix
	ctx := context.Background()
	fs, err := storage.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	healthy := &Checker{Store: fs}
	rec := httptest.NewRecorder()
	healthy.Healthz(rec, httptest.NewRequest("GET", "/healthz", nil))
	if rec.Code != 200 {
		t.Errorf("/healthz = %d", rec.Code)
	}
	// Before the first result a probe waits for it, until the probe ends
	// (here: at once) or firstWait has passed.
	gone, cancel := context.WithCancel(ctx)
	cancel()
	if code, body := probe(t, healthy, gone); code != http.StatusServiceUnavailable || !strings.Contains(body, "not checked yet") {
		t.Errorf("/readyz before the first check = %d %s", code, body)
	}
	waiting := make(chan string)
	go func() {
		code, body := probe(t, healthy, ctx)
		waiting <- fmt.Sprint(code, " ", body)
	}()
	healthy.update(ctx) // real Nix, real storage
	if got := <-waiting; got != "200 ready\n" {
		t.Errorf("/readyz waiting for the first check = %q", got)
	}
	if code, body := probe(t, healthy, ctx); code != 200 || body != "ready\n" {
		t.Errorf("/readyz when healthy = %d %s", code, body)
	}
	if reason := healthy.status(time.Now().Add(stale + time.Second)); !strings.Contains(reason, "last checked") {
		t.Errorf("a result older than %s still counts: %q", stale, reason)
	}

	broken := &Checker{Store: brokenStore{fs}}
	broken.update(ctx)
	if code, body := probe(t, broken, ctx); code != http.StatusServiceUnavailable || !strings.Contains(body, "not ready: storage is not reachable") {
		t.Errorf("/readyz with broken storage = %d %s", code, body)
	}
}

// An aborted probe neither runs a check nor changes the answer (it used
// to cache "not ready" for 5 s).
func TestReadyzAbortedProbe(t *testing.T) {
	fs, err := storage.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	store := &countingStore{Backend: fs}
	h := &Checker{Store: store}
	h.update(context.Background())
	aborted, cancel := context.WithCancel(context.Background())
	cancel()
	for range 3 {
		if code, body := probe(t, h, aborted); code != 200 {
			t.Errorf("aborted /readyz = %d %s", code, body)
		}
	}
	if code, body := probe(t, h, context.Background()); code != 200 {
		t.Errorf("/readyz after aborted probes = %d %s", code, body)
	}
	if n := store.reads.Load(); n != 1 {
		t.Errorf("storage read %d times: probes must only read the last result", n)
	}
}

// A full disk (the Nix store's or the storage's) makes the server not
// ready, with the reason.
func TestReadyzFullDisk(t *testing.T) {
	fs, err := storage.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	free := map[string]uint64{nixStore: 10 << 30, "/srv/nixery": 10 << 30}
	h := &Checker{Store: fs, Disks: Disks(0, "/srv/nixery"),
		statfs: func(path string) (uint64, error) { return free[path], nil }}
	h.update(context.Background())
	if code, body := probe(t, h, context.Background()); code != 200 {
		t.Fatalf("/readyz with room on both disks = %d %s", code, body)
	}
	for _, dir := range []string{nixStore, "/srv/nixery"} {
		free[dir] = 100 << 20
		h.update(context.Background())
		code, body := probe(t, h, context.Background())
		if want := "not ready: disk full: " + dir + " has 100 MiB free, less than 1024 MiB"; code != http.StatusServiceUnavailable || !strings.Contains(body, want) {
			t.Errorf("/readyz with %s full = %d %q, want 503 %q", dir, code, body, want)
		}
		free[dir] = 10 << 30
	}
	// NIXERY_NIX_MIN_FREE below 1 GiB lets the Nix store run that low
	// (Nix collects garbage to keep it); storage keeps its 1 GiB.
	h.Disks = Disks(256<<20, "/srv/nixery")
	free[nixStore] = 300 << 20
	h.update(context.Background())
	if code, body := probe(t, h, context.Background()); code != 200 {
		t.Errorf("/readyz with 300 MiB of a 256 MiB min-free = %d %s", code, body)
	}
	free[nixStore] = 200 << 20
	h.update(context.Background())
	if code, body := probe(t, h, context.Background()); code != http.StatusServiceUnavailable || !strings.Contains(body, "less than 256 MiB") {
		t.Errorf("/readyz with 200 MiB of a 256 MiB min-free = %d %s", code, body)
	}
	if d := Disks(8<<30, ""); len(d) != 1 || d[0].MinFree != defaultMinFree {
		t.Errorf("a min-free above 1 GiB, no storage disk: %+v", d)
	}
	// The real statfs, on a real directory.
	h.statfs = nil
	h.Disks = []Disk{{t.TempDir(), 1}}
	h.update(context.Background())
	if code, body := probe(t, h, context.Background()); code != 200 {
		t.Errorf("/readyz with statfs(2) = %d %s", code, body)
	}
	h.Disks[0].MinFree = 1 << 62
	h.update(context.Background())
	if code, body := probe(t, h, context.Background()); code != http.StatusServiceUnavailable || !strings.Contains(body, "disk full") {
		t.Errorf("/readyz with an unreachable threshold = %d %s", code, body)
	}
}

// The checker runs in the background from the start and stops with its
// context.
func TestReadyzBackground(t *testing.T) {
	fs, err := storage.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	store := &countingStore{Backend: fs, read: make(chan struct{}, 1)}
	h := &Checker{Store: store}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		h.Run(ctx)
		close(stopped)
	}()
	<-store.read // the first check, at once
	cancel()
	<-stopped
	h.mu.Lock()
	checked := !h.checked.IsZero()
	h.mu.Unlock()
	// The first check either finished before the cancellation (and
	// counts) or was cut short by it (and does not: shutting down is no
	// verdict on Nix or storage).
	gone, stop := context.WithCancel(context.Background())
	stop()
	if code, body := probe(t, h, gone); checked && code != 200 || !checked && !strings.Contains(body, "not checked yet") {
		t.Errorf("/readyz after the checker stopped = %d %s (checked: %v)", code, body, checked)
	}
}

// On SIGTERM (draining) a ready replica is not ready at once.
func TestReadyzDraining(t *testing.T) {
	fs, err := storage.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	h := &Checker{Store: fs}
	h.update(context.Background())
	if code, body := probe(t, h, context.Background()); code != 200 {
		t.Fatalf("/readyz = %d %s", code, body)
	}
	h.Drain()
	if code, body := probe(t, h, context.Background()); code != 503 || !strings.Contains(body, "shutting down") {
		t.Errorf("/readyz while draining = %d %s", code, body)
	}
}

// A disk directory that does not exist yet (the store of an empty /nix
// volume) is judged by the nearest existing directory above it.
func TestFreeBytesMissingDir(t *testing.T) {
	dir := t.TempDir()
	want, err := freeBytes(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := freeBytes(filepath.Join(dir, "nix", "store"))
	if err != nil || got == 0 || want == 0 {
		t.Errorf("freeBytes of a missing directory = %d, %v (its parent: %d)", got, err, want)
	}
}

// On a private instance /readyz is open to anyone who reaches the port,
// so it names only the kind of problem; the details (storage errors,
// paths, free space) go to the log, once per change.
func TestReadyzPrivate(t *testing.T) {
	fs, err := storage.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var logged syncBuffer
	h := &Checker{Store: brokenStore{fs}, Private: true, Logger: slog.New(slog.NewTextHandler(&logged, nil))}
	h.update(context.Background())
	h.update(context.Background())
	srv := httptest.NewServer(http.HandlerFunc(h.Readyz))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || string(body) != "not ready: storage is not reachable\n" {
		t.Errorf("private /readyz = %d %q, want 503 and the kind of problem alone", resp.StatusCode, body)
	}
	if n := strings.Count(logged.String(), "connection refused"); n != 1 {
		t.Errorf("the reason is logged %d times, want once: %s", n, logged.String())
	}
	// Disks: the kind, not the path or the figures.
	h = &Checker{Store: fs, Private: true, Disks: []Disk{{"/srv/secret-volume", 1 << 30}},
		statfs: func(string) (uint64, error) { return 1 << 20, nil }}
	h.update(context.Background())
	if reason := h.status(time.Now()); reason != "disk full" && reason != "nix is not usable" {
		t.Errorf("private disk reason %q", reason)
	}
}

// With TLS, files renewed into a broken pair leave the server ready (the
// pair loaded before is served) with a warning, and a certificate that
// has expired makes it not ready.
func TestReadyzTLS(t *testing.T) {
	need.Tool(t, "nix-build") // ready runs real Nix
	fs, err := storage.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ca := certstest.NewCA(t, "test CA")
	first := ca.Issue(t, certstest.Leaf{Name: "first", Hosts: []string{"127.0.0.1"}})
	certFile, keyFile := first.Write(t, dir, "tls.crt", "tls.key")
	pair, err := certs.Load(certFile, keyFile, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	h := &Checker{Store: fs, TLS: pair, Private: true}
	h.update(context.Background())
	if code, body := probe(t, h, context.Background()); code != 200 || body != "ready\n" {
		t.Fatalf("/readyz = %d %q", code, body)
	}
	os.WriteFile(certFile, ca.Issue(t, certstest.Leaf{Name: "second", Hosts: []string{"127.0.0.1"}}).CertPEM, 0o600)
	pair.Check()
	code, body := probe(t, h, context.Background())
	want := "ready\nwarning: the TLS certificate files changed into a pair that is not usable (see the log); the certificate loaded before is served, valid until " +
		first.Cert.NotAfter.UTC().Format(time.RFC3339) + "\n"
	if code != 200 || body != want {
		t.Errorf("/readyz with a broken pair = %d %q, want 200 %q", code, body, want)
	}

	expired := ca.Issue(t, certstest.Leaf{Name: "expired", Hosts: []string{"127.0.0.1"}, NotAfter: time.Now().Add(-time.Minute)})
	certFile, keyFile = expired.Write(t, dir, "expired.crt", "expired.key")
	if pair, err = certs.Load(certFile, keyFile, nil); err != nil {
		t.Fatal(err)
	}
	for _, private := range []bool{false, true} {
		h := &Checker{Store: fs, TLS: pair, Private: private}
		h.update(context.Background())
		want := "not ready: TLS certificate expired\n"
		if !private {
			want = "not ready: TLS certificate expired at " + expired.Cert.NotAfter.UTC().Format(time.RFC3339) + ": renew the files of NIXERY_TLS_CERT and NIXERY_TLS_KEY\n"
		}
		if code, body := probe(t, h, context.Background()); code != 503 || body != want {
			t.Errorf("/readyz with an expired certificate (private %v) = %d %q, want 503 %q", private, code, body, want)
		}
	}
}

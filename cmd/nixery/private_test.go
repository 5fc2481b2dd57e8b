package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nixery/nixery/internal/access"
	"github.com/nixery/nixery/internal/builder/buildertest"
	"github.com/nixery/nixery/internal/metrics"
	"github.com/nixery/nixery/internal/readiness"
	"github.com/nixery/nixery/internal/registry"
	"github.com/nixery/nixery/internal/search"
	"github.com/nixery/nixery/internal/storage"
	"github.com/nixery/nixery/internal/web"
)

// privateServer serves the whole HTTP side as serve wires it, over the
// demo set with real Nix, with an htpasswd file generated here.
func privateServer(t *testing.T, metricsPublic bool) (*httptest.Server, string) {
	t.Helper()
	h, storeDir := testHandler(t, &access.Guard{Users: testUsers(t), TrustProxy: true}, metricsPublic)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, storeDir
}

// testUsers is an htpasswd file of one user, alice, password s3cret-pw.
func testUsers(t *testing.T) *access.Users {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret-pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(path, []byte("alice:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	users, err := access.LoadHtpasswd(path)
	if err != nil {
		t.Fatal(err)
	}
	return users
}

// testHandler is the whole HTTP side as serve wires it, behind guard,
// over the demo set with real Nix; it returns the handler and the
// directory of its filesystem storage.
func testHandler(t *testing.T, guard *access.Guard, metricsPublic bool) (http.Handler, string) {
	t.Helper()
	storeDir := filepath.Join(t.TempDir(), "storage")
	store, err := storage.NewFilesystem(storeDir)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	b := buildertest.New(t)
	b.Storage, b.Logger = store, log
	probes := &readiness.Checker{Store: store}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { probes.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	h := newHandler(guard, metricsPublic,
		&registry.Registry{Builder: b, Storage: store, Logger: log},
		&web.Site{Builder: b, Version: "test", Logger: log, Search: &search.Searcher{Nix: b.Nix, Source: b.Source, Metadata: b.Metadata(), Logger: log}},
		metrics.Handler(prometheus.NewRegistry()), probes)
	return h, storeDir
}

// blobs counts the blobs in the filesystem storage at dir.
func blobs(t *testing.T, dir string) int {
	entries, err := os.ReadDir(filepath.Join(dir, "blobs", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

type creds int

const (
	anonymous creds = iota
	wrong
	unknownUser
	right
)

func (c creds) String() string {
	return [...]string{"anonymous", "wrong password", "unknown user", "right"}[c]
}

func TestPrivateInstance(t *testing.T) {
	for _, metricsPublic := range []bool{false, true} {
		srv, storeDir := privateServer(t, metricsPublic)
		clients := 0
		get := func(path string, c creds) (*http.Response, string) {
			t.Helper()
			req, _ := http.NewRequest("GET", srv.URL+path, nil)
			// Each failing login from a client of its own: failed logins
			// are limited per client (TestLoginFailuresLimited).
			clients++
			req.Header.Set("X-Forwarded-For", fmt.Sprintf("198.51.100.%d", clients%250))
			switch c {
			case wrong:
				req.SetBasicAuth("alice", "s3cret-p")
			case unknownUser:
				req.SetBasicAuth("bob", "s3cret-pw")
			case right:
				req.SetBasicAuth("alice", "s3cret-pw")
			}
			client := &http.Client{Timeout: 2 * time.Minute, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			return resp, string(body)
		}
		guarded := []string{
			"/v2/", "/v2/hello/manifests/latest", "/v2/hello/blobs/sha256:" + strings.Repeat("0", 64),
			"/v2/hello/blobs/uploads/", "/v2/hello/tags/list",
			// The artifacts: SBOMs, provenance, signatures and the key.
			"/v2/hello/referrers/sha256:" + strings.Repeat("0", 64), "/v2/hello/manifests/sha256-" + strings.Repeat("0", 64) + ".sig",
			"/cosign.pub",
			"/", "/image/hello", "/build/hello", "/search?q=hello",
			"/api/search?q=hello", "/api/image/hello", "/api/build/hello/events",
			"/builds", "/api/builds", // the operator's page of builds and its JSON
			"/no/such/page",
		}
		open := []string{"/healthz", "/readyz"}
		if metricsPublic {
			open = append(open, "/metrics")
		} else {
			guarded = append(guarded, "/metrics")
		}
		for _, c := range []creds{anonymous, wrong, unknownUser} {
			for _, p := range guarded {
				resp, body := get(p, c)
				if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != `Basic realm="Nixery"` {
					t.Errorf("metrics public %v, %s, %s: %d %q WWW-Authenticate %q", metricsPublic, c, p, resp.StatusCode, body, resp.Header.Get("WWW-Authenticate"))
					continue
				}
				if strings.HasPrefix(p, "/v2/") {
					var e struct{ Errors []struct{ Code string } }
					if json.Unmarshal([]byte(body), &e) != nil || len(e.Errors) != 1 || e.Errors[0].Code != "UNAUTHORIZED" ||
						resp.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
						t.Errorf("%s %s: registry 401 body %q", c, p, body)
					}
				} else if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") || !strings.Contains(body, "401 Unauthorized") {
					t.Errorf("%s %s: page 401 %q %q", c, p, resp.Header.Get("Content-Type"), body)
				}
				if strings.Contains(body, "s3cret") || strings.Contains(body, "$2a$") {
					t.Errorf("%s %s: answer shows a secret: %q", c, p, body)
				}
			}
			for _, p := range open {
				if resp, body := get(p, c); resp.StatusCode != 200 {
					t.Errorf("metrics public %v, %s, %s: %d %q", metricsPublic, c, p, resp.StatusCode, body)
				}
			}
		}
		// Refused requests built nothing.
		if n := blobs(t, storeDir); n != 0 {
			t.Fatalf("refused requests stored %d blobs", n)
		}

		// With the right credentials everything answers as it would on a
		// public instance.
		for _, tt := range []struct {
			path   string
			status int
		}{
			{"/v2/", 200}, {"/v2/hello/manifests/latest", 200}, {"/v2/hello/tags/list", 200},
			{"/v2/hello/blobs/uploads/", 405}, {"/", 200}, {"/image/hello", 200},
			{"/api/search?q=hello", 200}, {"/api/image/hello", 200}, {"/no/such/page", 404},
			{"/healthz", 200}, {"/readyz", 200}, {"/metrics", 200}, {"/builds", 200},
		} {
			if resp, body := get(tt.path, right); resp.StatusCode != tt.status {
				t.Errorf("metrics public %v, %s: %d, want %d: %q", metricsPublic, tt.path, resp.StatusCode, tt.status, body)
			}
		}
		if n := blobs(t, storeDir); n == 0 {
			t.Errorf("the authenticated pull stored nothing")
		}
		// The pull's build is on the operator's page, for those who may see it.
		if resp, body := get("/api/builds", right); resp.StatusCode != 200 || !strings.Contains(body, `"image":"hello","tag":"latest","result":"ok"`) {
			t.Errorf("/api/builds with credentials: %d %s", resp.StatusCode, body)
		}
	}
}

// TestHtpasswdStartup: serve refuses to start with a missing file or a
// non-bcrypt entry, and says which line without showing its hash.
func TestHtpasswdStartup(t *testing.T) {
	dir := t.TempDir()
	md5 := filepath.Join(dir, "md5")
	os.WriteFile(md5, []byte("# users\nalice:$apr1$Zt1NKbs2$KQ4v6A5ZfBHeYyRxBz7x90\n"), 0o600)
	for _, tt := range []struct {
		file string
		want []string
	}{
		{filepath.Join(dir, "missing"), []string{"NIXERY_HTPASSWD / --htpasswd", "no such file"}},
		{md5, []string{"NIXERY_HTPASSWD / --htpasswd", "line 2", `"alice"`, "not a bcrypt hash"}},
	} {
		var stdout, stderr strings.Builder
		if code := run([]string{"serve", "--htpasswd", tt.file, "--port", "1"}, &stdout, &stderr); code != 1 {
			t.Errorf("%s: exit %d, want 1", tt.file, code)
		}
		for _, w := range tt.want {
			if !strings.Contains(stderr.String(), w) {
				t.Errorf("%s: %q does not say %q", tt.file, stderr.String(), w)
			}
		}
		if strings.Contains(stderr.String(), "KQ4v6A5Z") {
			t.Errorf("the hash is shown: %q", stderr.String())
		}
	}
}

package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/bcrypt"

	"github.com/nixery/nixery/internal/access"
	"github.com/nixery/nixery/internal/metrics"
	"github.com/nixery/nixery/internal/readiness"
	"github.com/nixery/nixery/internal/registry"
	"github.com/nixery/nixery/internal/route"
	"github.com/nixery/nixery/internal/server"
	"github.com/nixery/nixery/internal/storage"
	"github.com/nixery/nixery/internal/web"
)

// Registry paths reach the registry as they are: one with an empty, "."
// or ".." segment names no valid repository and gets the spec's
// NAME_INVALID, not the mux's redirect (text/html) to another name.
func TestRegistryPathsNotCleaned(t *testing.T) {
	store, err := storage.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	site := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "site") })
	h := newHandler(&access.Guard{}, false, &registry.Registry{Storage: store, Logger: slog.New(slog.DiscardHandler)},
		site, metrics.Handler(prometheus.NewRegistry()), &readiness.Checker{Store: store})
	addr := serveTCP(t, h)
	for _, tt := range []struct {
		path   string
		status int
		code   string
	}{
		{"/v2/foo//bar/manifests/latest", 400, "NAME_INVALID"},
		{"/v2/a/../hello/manifests/latest", 400, "NAME_INVALID"},
		{"/v2/./hello/manifests/latest", 400, "NAME_INVALID"},
		{"/v2/hello/../../metrics/manifests/latest", 400, "NAME_INVALID"},
		{"/v2//hello/blobs/sha256:" + strings.Repeat("0", 64), 400, "NAME_INVALID"},
		{"/v2/hello/blobs/sha256:" + strings.Repeat("0", 64), 404, "BLOB_UNKNOWN"},
		{"/v2/", 200, ""},
	} {
		// A raw request: Go's client would send the path as it is too,
		// but say so plainly.
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET "+tt.path+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%s: %v", tt.path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		c.Close()
		var e struct{ Errors []struct{ Code string } }
		json.Unmarshal(body, &e)
		if resp.StatusCode != tt.status || (tt.code != "" && (len(e.Errors) != 1 || e.Errors[0].Code != tt.code)) ||
			resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: %d %s %q, want %d %s", tt.path, resp.StatusCode, resp.Header.Get("Content-Type"), body, tt.status, tt.code)
		}
	}
}

// serveTCP serves h on 127.0.0.1 as serve does, and returns its address.
func serveTCP(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := server.New(h)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// syncBuffer is a log sink for a server's goroutines.
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

// A client chooses the path, and so what the log and the error answer
// echo of it: a 60 KB name or tag of NULs and line breaks makes log
// lines and answers of bounded length, with every byte escaped.
func TestBadRequestsBoundedEcho(t *testing.T) {
	store, err := storage.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var logged syncBuffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	h := newHandler(&access.Guard{}, false, &registry.Registry{Storage: store, Logger: log},
		http.NotFoundHandler(), metrics.Handler(prometheus.NewRegistry()), &readiness.Checker{Store: store})
	addr := serveTCP(t, metrics.Instrument(log, metrics.NewHTTP(nil), h))
	const maxLine, maxAnswer = 4 << 10, 4 << 10
	for _, path := range []string{
		"/v2/" + strings.Repeat("%00", 20000) + "/manifests/latest",
		"/v2/" + strings.Repeat("a%0Atime=forged%20level=ERROR%20", 1500) + "/manifests/latest",
		"/v2/hello/manifests/" + strings.Repeat("%0A%1B", 10000),
		"/v2/hello/blobs/sha256:" + strings.Repeat("%0A", 20000),
		"/v2/" + strings.Repeat("x/", 25000) + "nothing",
	} {
		before := strings.Count(logged.String(), "\n")
		requests := strings.Count(logged.String(), "msg=request ")
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%.40s…: %v", path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		c.Close()
		if resp.StatusCode/100 != 4 || len(body) > maxAnswer || !json.Valid(body) {
			t.Errorf("%.40s…: %d, %d bytes of answer (at most %d): %.200q", path, resp.StatusCode, len(body), maxAnswer, body)
		}
		// The request line comes last, once the handler returned.
		deadline := time.Now().Add(10 * time.Second)
		for strings.Count(logged.String(), "msg=request ") == requests && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		lines := strings.Split(strings.TrimSuffix(logged.String(), "\n"), "\n")[before:]
		if len(lines) > 2 {
			t.Errorf("%.40s…: %d log lines, want at most 2 (a forged line?)", path, len(lines))
		}
		for _, l := range lines {
			if len(l) > maxLine || strings.ContainsAny(l, "\x00\x1b\r") {
				t.Errorf("%.40s…: log line of %d bytes (at most %d), raw control characters %v: %.200q", path, len(l), maxLine, strings.ContainsAny(l, "\x00\x1b\r"), l)
			}
		}
	}
}

// TestRouteLabels: the request log and the metrics count each request
// under the route that the handler which answered it named, refusals of
// a private instance included. Metrics parse no path.
func TestRouteLabels(t *testing.T) {
	store, err := storage.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(htpasswd, []byte("alice:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	users, err := access.LoadHtpasswd(htpasswd)
	if err != nil {
		t.Fatal(err)
	}
	absent := "sha256:" + strings.Repeat("0", 64)
	for _, private := range []bool{false, true} {
		var logged syncBuffer
		log := slog.New(slog.NewTextHandler(&logged, nil))
		guard := &access.Guard{}
		if private {
			guard.Users = users
		}
		// No builder: these requests are answered before any build.
		h := metrics.Instrument(log, metrics.NewHTTP(nil), newHandler(guard, false,
			&registry.Registry{Storage: store, Logger: log}, &web.Site{Logger: log},
			metrics.Handler(prometheus.NewRegistry()), &readiness.Checker{Store: store}))
		for _, tt := range []struct {
			method, path string
			want         route.Label
			public, priv int // the status, public and private (0: 401)
		}{
			{"GET", "/v2/", route.V2Base, 200, 0},
			{"GET", "/v2", route.V2Base, 307, 307}, // the mux's redirect to /v2/
			{"GET", "/v2/hello/manifests/-latest", route.V2Manifest, 404, 0},
			{"GET", "/v2/hello/manifests/refs%2Fheads%2Fmain", route.V2Manifest, 404, 0},
			{"GET", "/v2/hello/manifests/refs/../x", route.V2Manifest, 404, 0},
			{"GET", "/v2/a/b/c/blobs/" + absent, route.V2Blob, 404, 0},
			// Served as a blob, and counted as one.
			{"GET", "/v2/a/manifests/x/blobs/" + absent, route.V2Blob, 404, 0},
			{"POST", "/v2/hello/blobs/uploads/", route.V2Blob, 405, 0},
			{"GET", "/v2/_catalog", route.V2Other, 404, 0},
			{"GET", "/v2/hello/tags/list", route.V2Other, 200, 0},
			{"GET", "/robots.txt", route.Web, 200, 0},
			{"GET", "/some/random/path/from/a/scanner", route.Web, 404, 0},
			{"GET", "/api/build/shell/hello", route.APIEvents, 404, 0},
			{"GET", "/api/nothing", route.APIOther, 404, 0},
			{"POST", "/builds", route.Web, 405, 0},
			{"DELETE", "/api/builds", route.APIOther, 405, 0},
			{"GET", "/metrics", route.Metrics, 200, 0},
			{"POST", "/metrics", route.Metrics, 405, 0}, // the site's answer
			{"GET", "/healthz", route.Health, 200, 200},
			{"HEAD", "/readyz", route.Health, 503, 503}, // not checked yet
			{"POST", "/healthz", route.Health, 405, 0},
		} {
			before := strings.Count(logged.String(), "msg=request ")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
			status := tt.public
			if private {
				status = cmp.Or(tt.priv, 401)
			}
			if rec.Code != status {
				t.Errorf("private %v: %s %s: %d, want %d", private, tt.method, tt.path, rec.Code, status)
			}
			lines := strings.Split(strings.TrimSpace(logged.String()), "\n")
			last := lines[len(lines)-1]
			if strings.Count(logged.String(), "msg=request ") != before+1 || !strings.Contains(last, " route="+tt.want.String()+" ") {
				t.Errorf("private %v: %s %s: logged %q, want route=%v", private, tt.method, tt.path, last, tt.want)
			}
		}
	}
}

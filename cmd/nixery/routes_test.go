package main

import (
	"bufio"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nixery/nixery/access"
	"github.com/nixery/nixery/registry"
	"github.com/nixery/nixery/storage"
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
		site, metricsHandler(prometheus.NewRegistry()), &health{store: store})
	addr := limitedServer(t, h, serverLimits{})
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

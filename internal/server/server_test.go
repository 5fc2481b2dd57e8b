package server

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/nixery/nixery/internal/registry"
	"github.com/nixery/nixery/internal/storage"
)

// limitedServer serves h on 127.0.0.1 with the given limits, as serve
// does, and returns its address.
func limitedServer(t *testing.T, h http.Handler, l limits) string {
	t.Helper()
	srv := newWith(h, l)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// testRegistry is the registry API over filesystem storage holding one
// blob of size bytes; it returns the blob's path. done gets a value
// each time a request's handler has returned.
func testRegistry(t *testing.T, size int) (h http.Handler, blobPath string, done chan string) {
	t.Helper()
	store, err := storage.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w, err := store.Create(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	hash := sha256.New()
	chunk := []byte(strings.Repeat("nixery!\n", 8192))
	for n := 0; n < size; n += len(chunk) {
		c := chunk[:min(len(chunk), size-n)]
		w.Write(c)
		hash.Write(c)
	}
	d := digest.NewDigest(digest.SHA256, hash)
	if err := w.Commit(d); err != nil {
		t.Fatal(err)
	}
	reg := &registry.Registry{Storage: store, Logger: slog.New(slog.DiscardHandler)}
	done = make(chan string, 16)
	h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { done <- r.Method + " " + r.URL.Path }()
		reg.ServeHTTP(w, r)
	})
	return h, "/v2/hello/blobs/" + d.String(), done
}

// waitDone waits for a handler to return, at most limit.
func waitDone(t *testing.T, done chan string, limit time.Duration, what string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(limit):
		t.Fatalf("%s: the handler still runs after %s", what, limit)
	}
}

// A client that declares a request body and does not send it (or sends
// it slowly) is answered once the body timeout has passed, and its
// connection is closed; it cannot hold the connection and the handler
// for ever. A short body that arrives is read and the connection kept.
func TestHTTPServerSlowBody(t *testing.T) {
	h, _, done := testRegistry(t, 10)
	addr := limitedServer(t, h, limits{BodyTimeout: 300 * time.Millisecond})
	for _, tt := range []struct {
		request string
		status  string
	}{
		{"GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n", "HTTP/1.1 200 OK"},
		{"GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\npart of it", "HTTP/1.1 200 OK"},
		{"GET /v2/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", "HTTP/1.1 200 OK"},
		// A write method keeps its 405 UNSUPPORTED.
		{"PUT /v2/hello/manifests/latest HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", "HTTP/1.1 405 Method Not Allowed"},
		{"POST /v2/hello/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n", "HTTP/1.1 405 Method Not Allowed"},
		// A push that waits for 100 Continue gets its 405 first, and
		// sends no body.
		{"PUT /v2/hello/blobs/uploads/x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1000000000\r\n\r\n", "HTTP/1.1 405 Method Not Allowed"},
		{"PATCH /v2/hello/blobs/uploads/x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 100\r\n\r\n", "HTTP/1.1 405 Method Not Allowed"},
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(20 * time.Second))
		io.WriteString(c, tt.request)
		answer, err := io.ReadAll(c) // until the server closes
		c.Close()
		if err != nil {
			t.Errorf("%q: no answer, connection not closed: %v (read %q)", tt.request, err, answer)
			continue
		}
		if !strings.HasPrefix(string(answer), tt.status) {
			t.Errorf("%q: answer %q, want %s", tt.request, answer, tt.status)
		}
		waitDone(t, done, 10*time.Second, tt.request)
	}

	// A body that arrives is no reason to close: the connection serves
	// the next request too.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	for i := 0; i < 2; i++ {
		io.WriteString(c, "GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d on one connection: %v", i+1, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Close {
			t.Fatalf("request %d: %d, close %v", i+1, resp.StatusCode, resp.Close)
		}
	}
}

// A client that stops reading a download does not hold its connection
// and handler for ever: once no write has made progress for the stall
// timeout, the answer is abandoned. A slow client that keeps reading gets
// the whole blob.
func TestHTTPServerStalledReader(t *testing.T) {
	const size = 64 << 20 // far more than the sockets' buffers hold
	h, blob, done := testRegistry(t, size)
	addr := limitedServer(t, h, limits{WriteStall: 500 * time.Millisecond})

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", blob)
	// Read nothing.
	waitDone(t, done, 20*time.Second, "a client that reads nothing")

	// The same for the build event stream's writes and any other
	// answer: every write goes through the same limit. A slow reader
	// that keeps reading is served in full.
	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.SetDeadline(time.Now().Add(2 * time.Minute))
	fmt.Fprintf(c2, "GET %s HTTP/1.1\r\nHost: x\r\nRange: bytes=0-4194303\r\n\r\n", blob)
	resp, err := http.ReadResponse(bufio.NewReader(c2), nil)
	if err != nil {
		t.Fatal(err)
	}
	var got int64
	buf := make([]byte, 256<<10)
	for {
		n, err := resp.Body.Read(buf)
		got += int64(n)
		if err != nil {
			break
		}
		time.Sleep(20 * time.Millisecond) // a slow client, well within the stall timeout
	}
	if resp.StatusCode != http.StatusPartialContent || got != 4<<20 {
		t.Errorf("slow reader: %d, %d bytes, want 206 and %d", resp.StatusCode, got, 4<<20)
	}
	waitDone(t, done, 10*time.Second, "the slow reader")
}

// The server's limits: a 1 MB URL is refused with 431 before any handler
// runs; ordinary requests pass.
func TestHTTPServerLimits(t *testing.T) {
	handled := atomic.Int64{}
	srv := New(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handled.Add(1)
		fmt.Fprintln(w, "ok")
	}))
	if srv.IdleTimeout != 120*time.Second || srv.MaxHeaderBytes != 64<<10 || srv.ReadHeaderTimeout == 0 {
		t.Errorf("limits: idle %s, max header bytes %d, read header %s", srv.IdleTimeout, srv.MaxHeaderBytes, srv.ReadHeaderTimeout)
	}
	if h2 := srv.HTTP2; h2 == nil || h2.MaxConcurrentStreams != 100 || h2.WriteByteTimeout != 60*time.Second {
		t.Errorf("HTTP/2 limits: %+v", h2)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	base := "http://" + ln.Addr().String()

	resp, err := http.Get(base + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("ordinary request: %d", resp.StatusCode)
	}
	resp, err = http.Get(base + "/api/search?q=" + strings.Repeat("a", 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("1 MB URL: %d, want 431", resp.StatusCode)
	}
	if n := handled.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1 (not for the 1 MB URL)", n)
	}
}

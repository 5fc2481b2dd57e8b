package main

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The server's limits: a 1 MB URL is refused with 431 before any handler
// runs; ordinary requests pass.
func TestHTTPServerLimits(t *testing.T) {
	handled := atomic.Int64{}
	srv := newHTTPServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handled.Add(1)
		fmt.Fprintln(w, "ok")
	}))
	if srv.IdleTimeout != 120*time.Second || srv.MaxHeaderBytes != 64<<10 || srv.ReadHeaderTimeout == 0 {
		t.Errorf("limits: idle %s, max header bytes %d, read header %s", srv.IdleTimeout, srv.MaxHeaderBytes, srv.ReadHeaderTimeout)
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

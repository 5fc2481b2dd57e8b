package web

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nixery/nixery/internal/access"
)

// Watching a build in flight costs no build, so the build rate limit
// does not bound it: one client may hold only so many event streams at
// once, and gets 429 TOOMANYREQUESTS with Retry-After beyond; a stream
// that ends frees its place.
func TestEventStreamsBounded(t *testing.T) {
	t.Setenv("NIXERY_SLOW_SECONDS", "20")
	s := newSite(t)
	s.Streams = access.Streams{PerClient: 2}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		s.Builder.Drain(ctx) // the slow build ends before its storage goes
	})
	srv := httptest.NewServer((&access.Guard{}).Identify(s))
	defer srv.Close()

	// open starts a stream of the slow build and returns once its
	// first event (queued, or a phase) arrived.
	open := func() (*http.Response, context.CancelFunc) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+EventsPath("slow"), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == 200 {
			br := bufio.NewReader(resp.Body)
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					t.Fatalf("stream ended before its first event: %v", err)
				}
				if strings.HasPrefix(line, "data: ") {
					break
				}
			}
		}
		return resp, cancel
	}
	first, cancelFirst := open()
	_, cancelSecond := open()
	defer cancelSecond()
	if first.StatusCode != 200 {
		t.Fatalf("first stream: %d", first.StatusCode)
	}
	third, cancelThird := open()
	defer cancelThird()
	body, _ := io.ReadAll(third.Body)
	var e struct{ Error string }
	if third.StatusCode != http.StatusTooManyRequests || third.Header.Get("Retry-After") == "" ||
		json.Unmarshal(body, &e) != nil || !strings.Contains(e.Error, "event streams") {
		t.Fatalf("third stream of one client: %d Retry-After %q %q, want 429 with Retry-After", third.StatusCode, third.Header.Get("Retry-After"), body)
	}

	// The first client leaves: its place is free once its handler has
	// noticed (it waits for the build, or the client to go).
	cancelFirst()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, cancel := open()
		status := resp.StatusCode
		if status == 200 {
			cancel()
			break
		}
		resp.Body.Close()
		cancel()
		if time.Now().After(deadline) {
			t.Fatalf("after a stream closed: still %d", status)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestFleetBuildsOnce runs two replicas on one bucket (S3 and GCS): eight
// simultaneous first pulls of one image, split over both, run one Nix
// build in the whole fleet; and when the replica holding a build is
// killed (-9) mid-build, the other takes it over and delivers the image.
func TestFleetBuildsOnce(t *testing.T) {
	needServer(t)
	for _, backend := range []string{"s3", "gcs"} {
		t.Run(backend, func(t *testing.T) {
			srv := startBucket(t, backend)
			tmp := t.TempDir()
			env := append(bucketEnv(backend, srv), "NIXERY_BUILD_LEASE_TTL=2", "NIXERY_SLOW_SECONDS=4", "NIXERY_BLOB_REDIRECT=false")
			a, err := start(tmp, filepath.Join(tmp, "unused-a"), env...)
			if err != nil {
				t.Fatal(err)
			}
			defer a.stop()
			b, err := start(tmp, filepath.Join(tmp, "unused-b"), env...)
			if err != nil {
				t.Fatal(err)
			}
			defer b.stop()
			replicas := []*nixery{a, b}
			accept := "application/vnd.oci.image.manifest.v1+json"

			// 1. Eight first pulls at once, four to each replica.
			image := "/v2/shell/python3/perl/manifests/latest"
			var wg sync.WaitGroup
			answers := make([]string, 8)
			for i := range answers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					answers[i] = fetch(replicas[i%2], image, accept)
				}()
			}
			wg.Wait()
			for _, ans := range answers[1:] {
				if ans != answers[0] || !strings.HasPrefix(ans, "200 sha256:") {
					t.Errorf("answers differ or failed: %q", answers)
					break
				}
			}
			builds := a.metric(t, "nixery_nix_builds_total") + b.metric(t, "nixery_nix_builds_total")
			if builds != 1 {
				t.Errorf("eight first pulls over two replicas ran %d Nix builds, want 1", builds)
			}

			// The other replica's first pull of an image the first built.
			if resp, body := a.get(t, "GET", "/v2/shell/hello/manifests/latest", accept); resp.StatusCode != 200 {
				t.Fatalf("build on a: %d %s", resp.StatusCode, body)
			}
			t0 := time.Now()
			if resp, body := b.get(t, "GET", "/v2/shell/hello/manifests/latest", accept); resp.StatusCode != 200 {
				t.Fatalf("pull from b: %d %s", resp.StatusCode, body)
			}
			t.Logf("%s: the second replica's first pull of an image the first built: %s", backend, time.Since(t0).Round(time.Millisecond))

			// 2. Kill -9 the replica that holds a build.
			slow := "/v2/slow/manifests/latest"
			go fetch(a, slow, accept) // fails when a dies
			deadline := time.Now().Add(30 * time.Second)
			for a.metric(t, "nixery_builds_running") == 0 {
				if time.Now().After(deadline) {
					t.Fatal("the build never started on a")
				}
				time.Sleep(20 * time.Millisecond)
			}
			got := make(chan string, 1)
			go func() { got <- fetch(b, slow, accept) }()
			// b waits for a's lease before a dies.
			for !strings.Contains(b.log.String(), "building on another replica") {
				if time.Now().After(deadline) {
					t.Fatalf("b did not wait for a's build:\n%s", tail(b.log.String(), 20))
				}
				time.Sleep(20 * time.Millisecond)
			}
			// b's clients see a's phases, as a publishes them in its lease:
			// once b's event stream shows a's realise phase, a dies.
			sawPhase, stream := make(chan struct{}), make(chan string, 1)
			go func() {
				resp, err := (&http.Client{Timeout: 2 * time.Minute}).Get("http://" + b.addr + "/api/build/slow/events")
				if err != nil {
					close(sawPhase)
					stream <- err.Error()
					return
				}
				defer resp.Body.Close()
				var all strings.Builder
				sc := bufio.NewScanner(resp.Body)
				seen := false
				for sc.Scan() {
					all.WriteString(sc.Text() + "\n")
					if !seen && strings.Contains(sc.Text(), `"phase":"realise","message":"on another replica"`) {
						seen = true
						close(sawPhase)
					}
				}
				if !seen {
					close(sawPhase)
				}
				stream <- all.String()
			}()
			select {
			case <-sawPhase:
			case <-time.After(30 * time.Second):
				t.Fatal("b's event stream never showed a's phase")
			}
			a.kill()
			killed := time.Now()
			select {
			case ans := <-got:
				if !strings.HasPrefix(ans, "200 sha256:") {
					t.Fatalf("after the holder was killed, b answered %s", ans)
				}
				t.Logf("%s: takeover after kill -9: image delivered %s after the kill (lease TTL 2 s, build 4 s)", backend, time.Since(killed).Round(time.Millisecond))
			case <-time.After(60 * time.Second):
				t.Fatalf("b did not deliver the image after the holder died:\n%s", tail(b.log.String(), 30))
			}
			events := <-stream
			if !strings.Contains(events, `"phase":"realise","message":"on another replica"`) || !strings.Contains(events, `"kind":"done"`) {
				t.Errorf("b's event stream lacks a's phase or the end:\n%s", events)
			}
			if !strings.Contains(b.log.String(), "stopped renewing its lease; building here") {
				t.Errorf("b did not take the build over (a finished before it died?):\n%s", tail(b.log.String(), 20))
			}
		})
	}
}

// fetch GETs a manifest from s and returns "<status> <digest>", with the
// body if it failed (for goroutines, which must not call t.Fatal).
func fetch(s *nixery, path, accept string) string {
	req, _ := http.NewRequest("GET", "http://"+s.addr+path, nil)
	req.Header.Set("Accept", accept)
	resp, err := (&http.Client{Timeout: 5 * time.Minute}).Do(req)
	if err != nil {
		return "error " + err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	ans := fmt.Sprint(resp.StatusCode, " ", resp.Header.Get("Docker-Content-Digest"))
	if resp.StatusCode != 200 {
		ans += " " + string(body)
	}
	return ans
}

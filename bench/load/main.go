// Command load sends GET requests to one URL at a fixed rate (an open-loop
// load: requests start on schedule whether or not earlier ones finished,
// so a slow server shows up as latency instead of a lower request rate)
// and reports the achieved rate and latency percentiles. Bounded by
// -duration; meant for 127.0.0.1.
//
//	go run ./bench/load -url http://127.0.0.1:18080/v2/shell/hello/manifests/latest -rate 5000 -duration 10s
package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"
)

func main() {
	url := flag.String("url", "", "URL to GET")
	rate := flag.Int("rate", 5000, "requests per second")
	duration := flag.Duration("duration", 10*time.Second, "how long to send")
	accept := flag.String("accept", "application/vnd.oci.image.manifest.v1+json", "Accept header")
	flag.Parse()
	if *url == "" || *rate < 1 || *duration <= 0 || *duration > 5*time.Minute {
		fmt.Fprintln(os.Stderr, "usage: load -url URL [-rate N] [-duration D (at most 5m)]")
		os.Exit(2)
	}
	client := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256},
	}
	total := int(float64(*rate) * duration.Seconds())
	latencies := make([]time.Duration, total)
	failures := 0
	var mu sync.Mutex
	var wg sync.WaitGroup
	interval := time.Second / time.Duration(*rate)
	start := time.Now()
	for i := range total {
		// Start request i at its scheduled time.
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodGet, *url, nil)
			req.Header.Set("Accept", *accept)
			t := time.Now()
			resp, err := client.Do(req)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			latencies[i] = time.Since(t)
			if err != nil || resp.StatusCode != http.StatusOK {
				mu.Lock()
				failures++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(latencies)
	pct := func(p float64) time.Duration { return latencies[int(p*float64(len(latencies)-1))] }
	fmt.Printf("requests %d in %.2fs (%.0f/s), failures %d\n", total, elapsed.Seconds(), float64(total)/elapsed.Seconds(), failures)
	fmt.Printf("latency p50 %s, p90 %s, p99 %s, p99.9 %s, max %s\n", pct(0.5), pct(0.9), pct(0.99), pct(0.999), latencies[len(latencies)-1])
}

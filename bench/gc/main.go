// Command gc measures a garbage collection over a storage of many images:
// its time and its requests to the backend, on the filesystem or on an
// S3 or GCS server.
//
//	go run ./bench/gc -images 1000                       # filesystem in a temporary directory
//	go run ./bench/gc -images 1000 -s3 http://127.0.0.1:9000 -bucket b -key K -secret S
//	go run ./bench/gc -images 1000 -gcs http://127.0.0.1:4443 -bucket b
//
// It writes N images (a config, both manifests, -layers layers each drawn
// from a shared pool, the manifest cache entry, image details and the layer
// cache entries, as builds do), then runs two collections: one where every
// image is in use (the mark and the listing: what a routine run costs), and
// one at a clock far enough ahead that every image has expired (everything
// is deleted). The grace period's wait is skipped and reported as such.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/nixery/nixery/internal/archive"
	"github.com/nixery/nixery/internal/gc"
	"github.com/nixery/nixery/internal/manifest"
	"github.com/nixery/nixery/internal/metadata"
	"github.com/nixery/nixery/internal/storage"
)

func main() {
	images := flag.Int("images", 1000, "images to write")
	layers := flag.Int("layers", 12, "layers per image")
	pool := flag.Int("pool", 3000, "distinct layer blobs the images draw from")
	s3 := flag.String("s3", "", "S3 endpoint (path style)")
	gcs := flag.String("gcs", "", "GCS emulator endpoint")
	bucket := flag.String("bucket", "", "bucket")
	key := flag.String("key", "", "S3 access key")
	secret := flag.String("secret", "", "S3 secret key")
	flag.Parse()
	ctx := context.Background()

	var store storage.Backend
	var err error
	prefix := fmt.Sprintf("bench%d/", time.Now().UnixNano())
	switch {
	case *s3 != "":
		store, err = storage.NewS3(ctx, storage.S3Config{Bucket: *bucket, Prefix: prefix, Region: "us-east-1", Endpoint: *s3, PathStyle: true, AccessKeyID: *key, SecretAccessKey: *secret})
	case *gcs != "":
		store, err = storage.NewGCS(ctx, storage.GCSConfig{Bucket: *bucket, Prefix: prefix, Endpoint: *gcs})
	default:
		dir, derr := os.MkdirTemp("", "nixery-bench-gc-")
		if derr != nil {
			fail(derr)
		}
		defer os.RemoveAll(dir)
		store, err = storage.NewFilesystem(dir)
	}
	if err != nil {
		fail(err)
	}
	cat := metadata.New(store, nil)

	start := time.Now()
	blobs := make([]digest.Digest, *pool)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i := range blobs {
		g.Go(func() error {
			d, err := storage.Put(gctx, store, fmt.Appendf(nil, "layer %d", i))
			blobs[i] = d
			if err == nil {
				err = cat.PutLayer(gctx, metadata.Key(fmt.Sprint("layer", i)), archive.Layer{Digest: d, Size: int64(len(fmt.Sprintf("layer %d", i)))})
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		fail(err)
	}
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i := range *images {
		g.Go(func() error { return writeImage(gctx, store, cat, i, blobs, *layers) })
	}
	if err := g.Wait(); err != nil {
		fail(err)
	}
	fmt.Printf("%s: wrote %d images over %d layer blobs in %s\n", store, *images, *pool, time.Since(start).Round(time.Millisecond))

	skip := func(context.Context, time.Duration) error { return nil }
	var rep gc.Report
	heap := peakHeap(func() {
		rep, err = gc.Collect(ctx, cat, gc.Options{MaxAge: 720 * time.Hour, Sleep: skip})
	})
	if err != nil {
		fail(err)
	}
	fmt.Printf("every image in use: %s; peak heap %.1f MB above before\n", rep, heap)
	ahead := time.Now().Add(1000 * time.Hour)
	heap = peakHeap(func() {
		rep, err = gc.Collect(ctx, cat, gc.Options{MaxAge: 720 * time.Hour, Sleep: skip,
			Clock: func(context.Context) (time.Time, error) { return ahead, nil }})
	})
	if err != nil {
		fail(err)
	}
	fmt.Printf("every image expired (grace wait skipped): %s; peak heap %.1f MB above before\n", rep, heap)
}

// peakHeap runs f and returns the most heap in use while it ran (sampled
// every 5 ms, after a collection) above what was in use before, in MB.
func peakHeap(f func()) float64 {
	inUse := func() uint64 {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	runtime.GC()
	base := inUse()
	peak := base
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			peak = max(peak, inUse())
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	f()
	close(done)
	<-sampled
	return float64(peak-base) / 1e6
}

func writeImage(ctx context.Context, store storage.Backend, cat *metadata.Store, i int, pool []digest.Digest, n int) error {
	r := rand.New(rand.NewPCG(uint64(i), 1))
	cfg, err := storage.Put(ctx, store, fmt.Appendf(nil, "config %d", i))
	if err != nil {
		return err
	}
	var ls []manifest.Layer
	for range n {
		ls = append(ls, manifest.Layer{Blob: manifest.Blob{Digest: pool[r.IntN(len(pool))], Size: 1}, MediaType: manifest.LayerMediaType("gzip")})
	}
	e := metadata.Entry{Built: time.Now(), Manifests: map[string]digest.Digest{}}
	for _, mt := range manifest.MediaTypes {
		data, err := manifest.Manifest(mt, manifest.Blob{Digest: cfg, Size: 1}, ls)
		if err != nil {
			return err
		}
		d, err := storage.Put(ctx, store, data)
		if err != nil {
			return err
		}
		e.Manifests[mt] = d
	}
	key := metadata.Key(fmt.Sprint("image", i))
	if err := cat.PutEntry(ctx, key, e); err != nil {
		return err
	}
	return cat.PutDetails(ctx, key, &metadata.Details{Name: fmt.Sprint("image", i), Manifests: e.Manifests})
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench/gc:", err)
	os.Exit(1)
}

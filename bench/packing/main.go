// Command packing measures layer packing throughput: MB/s of store-path
// bytes turned into a compressed, hashed layer, for archive.PackWith on
// all cores against single-threaded compress/gzip (standard library) at its
// default level, on the same files in the same run.
//
//	go run ./bench/packing                  # 600 MB closure in a temp dir, removed afterwards
//	go run ./bench/packing -mb 1000 -dir /var/tmp/packbench -keep
//	go run ./bench/packing -run 'all cores|at once' -repeat 3   # some packers, each 3 times
//
// The closure is generated (fixed seed): store paths of many files whose
// content mimics a Nix store — text (scripts, headers, docs), binary-like
// data (repetitive structures with some entropy) and incompressible data
// (compressed archives, images) — in proportions of about 35/45/20 %.
// Files are generated once; each packer runs over the whole closure once
// after one warm-up read, so the page cache serves every run alike.
//
// The last rows pack the closure as 8 layers at once (the store paths
// dealt round-robin into 8 groups), as a cold build packs its layers, to
// show the throughput and memory of concurrent packing. The "peak live
// heap" column is the largest live heap (as marked by each garbage
// collection, runtime/metrics /gc/heap/live:bytes) seen while a packer
// ran, sampled every 5 ms after a collection before each run.
package main

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/nixery/nixery/archive"
)

func main() {
	total := flag.Int("mb", 600, "MB of store-path data to generate")
	dir := flag.String("dir", "", "directory for the generated store (default: a new temp dir)")
	keep := flag.Bool("keep", false, "keep the generated store")
	only := flag.String("run", "", "run only the packers whose name matches this regular expression (the reference always runs)")
	repeat := flag.Int("repeat", 1, "run each packer but the reference this many times, one row each")
	flag.Parse()

	root := *dir
	if root == "" {
		var err error
		if root, err = os.MkdirTemp("", "nixery-packbench-"); err != nil {
			fail(err)
		}
	}
	if !*keep {
		defer os.RemoveAll(root)
	}
	paths, bytes, err := generate(filepath.Join(root, "nix", "store"), int64(*total)<<20)
	if err != nil {
		fail(err)
	}
	fmt.Printf("closure: %d store paths, %.0f MB of file data; GOMAXPROCS %d (%d CPUs)\n\n",
		len(paths), float64(bytes)/1e6, runtime.GOMAXPROCS(0), runtime.NumCPU())

	// Warm the page cache so that the first packer is not penalised.
	if _, err := archive.PackWith(io.Discard, archive.Options{Level: 1}, func(tw *tar.Writer) error { return archive.StorePaths(tw, paths) }); err != nil {
		fail(err)
	}

	type run struct {
		name string
		pack func() (int64, error)
	}
	runs := []run{
		{"compress/gzip default level, 1 thread (reference)", func() (int64, error) { return stdlibPack(paths) }},
	}
	for _, o := range []struct {
		name string
		opts archive.Options
	}{
		{"archive gzip level 6 (default), all cores", archive.Options{}},
		{"archive gzip level 6, Concurrency 1 (tar+hash run alongside)", archive.Options{Concurrency: 1}},
		{"archive gzip level 1, all cores", archive.Options{Level: 1}},
		{"archive zstd default, all cores", archive.Options{Format: archive.Zstd}},
	} {
		runs = append(runs, run{o.name, func() (int64, error) {
			l, err := archive.PackWith(io.Discard, o.opts, func(tw *tar.Writer) error { return archive.StorePaths(tw, paths) })
			return l.Size, err
		}})
	}

	const layers = 8
	groups := make([][]string, layers)
	for i, p := range paths {
		groups[i%layers] = append(groups[i%layers], p)
	}
	for _, o := range []struct {
		name string
		opts archive.Options
	}{
		{"archive gzip level 6, 8 layers at once", archive.Options{}},
		{"archive zstd default, 8 layers at once", archive.Options{Format: archive.Zstd}},
	} {
		runs = append(runs, run{o.name, func() (int64, error) { return packConcurrently(groups, o.opts) }})
	}

	if *only != "" {
		re, err := regexp.Compile(*only)
		if err != nil {
			fail(err)
		}
		selected := runs[:1] // the reference
		for _, r := range runs[1:] {
			if re.MatchString(r.name) {
				selected = append(selected, r)
			}
		}
		runs = selected
	}
	repeated := runs[:1:1] // the reference, once
	for _, r := range runs[1:] {
		for range max(1, *repeat) {
			repeated = append(repeated, r)
		}
	}
	runs = repeated

	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 1, ' ', tabwriter.AlignRight|tabwriter.Debug)
	fmt.Fprintln(tw, "packer\tseconds\tMB/s\tspeed-up\tcompressed MB\tsize vs reference\tpeak live heap MB\t")
	var refSecs float64
	var refSize int64
	for i, r := range runs {
		runtime.GC()
		peak := sampleHeap()
		start := time.Now()
		size, err := r.pack()
		secs := time.Since(start).Seconds()
		heap := peak()
		if err != nil {
			fail(fmt.Errorf("%s: %w", r.name, err))
		}
		if i == 0 {
			refSecs, refSize = secs, size
		}
		fmt.Fprintf(tw, "%s\t%.2f\t%.1f\t%.2f×\t%.1f\t%+.2f %%\t%.0f\t\n", r.name, secs, float64(bytes)/1e6/secs,
			refSecs/secs, float64(size)/1e6, 100*(float64(size)/float64(refSize)-1), float64(heap)/(1<<20))
	}
	tw.Flush()
}

// packConcurrently packs each group as its own layer, all at once, and
// returns the total compressed size.
func packConcurrently(groups [][]string, opts archive.Options) (int64, error) {
	var wg sync.WaitGroup
	sizes := make([]int64, len(groups))
	errs := make([]error, len(groups))
	for i, g := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := archive.PackWith(io.Discard, opts, func(tw *tar.Writer) error { return archive.StorePaths(tw, g) })
			sizes[i], errs[i] = l.Size, err
		}()
	}
	wg.Wait()
	var total int64
	for i := range groups {
		if errs[i] != nil {
			return 0, errs[i]
		}
		total += sizes[i]
	}
	return total, nil
}

// sampleHeap samples the live heap every 5 ms until the returned function
// is called, which returns the largest sample.
func sampleHeap() func() uint64 {
	stop := make(chan struct{})
	result := make(chan uint64)
	go func() {
		sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		var peak uint64
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			metrics.Read(sample)
			peak = max(peak, sample[0].Value.Uint64())
			select {
			case <-stop:
				result <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return func() uint64 {
		close(stop)
		return <-result
	}
}

// stdlibPack is the reference: the same tar, hashed the same way, through
// single-threaded compress/gzip at its default level.
func stdlibPack(paths []string) (int64, error) {
	blob := sha256.New()
	n := &counter{}
	zw := gzip.NewWriter(io.MultiWriter(blob, n))
	diff := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(diff, zw))
	if err := archive.StorePaths(tw, paths); err != nil {
		return 0, err
	}
	if err := tw.Close(); err != nil {
		return 0, err
	}
	if err := zw.Close(); err != nil {
		return 0, err
	}
	return n.n, nil
}

type counter struct{ n int64 }

func (c *counter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

func fail(err error) {
	fmt.Fprintln(os.Stderr, "packing:", err)
	os.Exit(1)
}

// generate writes store paths under store until total bytes are written.
func generate(store string, total int64) ([]string, int64, error) {
	r := rand.New(rand.NewPCG(42, 4242))
	words := strings.Fields(`the of and to in is for on that with as by this from are be at or an it
		include define return struct static const void int char unsigned if else while
		export PATH bin lib share usr nix store glibc python3 import def class self None
		function local echo then fi done case esac license copyright GNU General Public`)
	var paths []string
	var written int64
	for i := 0; written < total; i++ {
		sp := filepath.Join(store, fmt.Sprintf("%032d-pkg%04d-1.%d", i, i, r.IntN(10)))
		nfiles := 1 + r.IntN(60)
		for f := 0; f < nfiles && written < total; f++ {
			kind := r.IntN(100)
			size := int(min(64<<20, max(200, int64(20e3*expish(r)))))
			var data []byte
			var file string
			switch {
			case kind < 35:
				data, file = text(r, words, size), fmt.Sprintf("share/doc/f%d.txt", f)
			case kind < 80:
				data, file = binaryLike(r, size), fmt.Sprintf("lib/lib%d.so", f)
			default:
				data, file = random(r, size), fmt.Sprintf("share/data/f%d.gz", f)
			}
			full := filepath.Join(sp, file)
			if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
				return nil, 0, err
			}
			if err := os.WriteFile(full, data, 0o444); err != nil {
				return nil, 0, err
			}
			written += int64(len(data))
		}
		paths = append(paths, sp)
	}
	return paths, written, nil
}

// expish draws from a heavy-tailed distribution with mean of about 3.
func expish(r *rand.Rand) float64 {
	x := r.ExpFloat64()
	return x * x * x
}

func text(r *rand.Rand, words []string, size int) []byte {
	var b strings.Builder
	for b.Len() < size {
		b.WriteString(words[r.IntN(len(words))])
		if r.IntN(12) == 0 {
			b.WriteByte('\n')
		} else {
			b.WriteByte(' ')
		}
	}
	return []byte(b.String()[:size])
}

// binaryLike mimics machine code and tables: short runs of recurring
// instruction-like patterns with random operands.
func binaryLike(r *rand.Rand, size int) []byte {
	patterns := make([][]byte, 64)
	for i := range patterns {
		patterns[i] = make([]byte, 2+r.IntN(6))
		for j := range patterns[i] {
			patterns[i][j] = byte(r.Uint32())
		}
	}
	out := make([]byte, 0, size+16)
	for len(out) < size {
		out = append(out, patterns[r.IntN(len(patterns))]...)
		if r.IntN(3) == 0 {
			out = append(out, byte(r.Uint32()), byte(r.Uint32()))
		}
		if r.IntN(20) == 0 {
			out = append(out, make([]byte, r.IntN(32))...)
		}
	}
	return out[:size]
}

func random(r *rand.Rand, size int) []byte {
	out := make([]byte, size)
	for i := 0; i+8 <= size; i += 8 {
		v := r.Uint64()
		for k := range 8 {
			out[i+k] = byte(v >> (8 * k))
		}
	}
	return out
}

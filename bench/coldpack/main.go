// Command coldpack measures the packing part of a cold build against the
// floor of the machine (issue 15, item 2): the time from a realised closure
// to the last layer committed to storage, as a ratio of one thread of
//
//	tar -cf - <paths> | gzip -6 | sha256sum
//
// (real processes) over the same store paths, and the total compressed
// bytes of the layers against that single gzip stream.
//
//	go run ./bench/coldpack                       # 485 MB closure, gzip level 6
//	go run ./bench/coldpack -mb 485 -level 6,5,4 -repeat 3
//	go run ./bench/coldpack -dir /var/tmp/coldpack -keep
//
// The closure is bench/storegen's (fixed seed, a nixpkgs-shaped reference
// graph), written once; every file is read once before the first
// measurement, so the page cache serves the floor and every pack alike, as
// it does a build whose store paths Nix has just realised or verified.
//
// Nixery's pack is a cold build's, without Nix (the Nix part of a build
// is measured elsewhere, see docs/measurements.md): the closure is grouped
// by layers.GroupWith at the budget (one slot kept for the customisation
// layer, as the builder keeps it), and the groups are packed by the
// builder's own packer, builder.Packer — archive.PackWith streaming into a
// fresh filesystem storage (storage.Create, Commit with its fsync and
// rename), the layers listed first and packed biggest first — and timed
// to the last Commit (-before adds the way the builder packed before
// issue 15, for comparison). Layer caches are not involved: every layer
// is new, as in a cold build.
package main

import (
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/nixery/nixery/bench/storegen"
	"github.com/nixery/nixery/internal/archive"
	"github.com/nixery/nixery/internal/builder"
	"github.com/nixery/nixery/internal/layers"
	"github.com/nixery/nixery/internal/storage"
)

func main() {
	total := flag.Int("mb", 485, "MB (10^6 bytes) of store-path data to generate (issue 15's shell/git/python3/go closure is 485 MB)")
	dir := flag.String("dir", "", "directory for the generated store and the storages (default: a new temp dir)")
	keep := flag.Bool("keep", false, "keep the generated store")
	levels := flag.String("level", "6", "comma-separated gzip levels to pack with (the floor is always gzip -6)")
	budget := flag.Int("budget", 100, "layer budget of the image (NIXERY_LAYER_BUDGET's default is 100)")
	repeat := flag.Int("repeat", 1, "pack this many times per level, one row each")
	concurrent := flag.String("concurrent", "", "comma-separated limits of layers packed at once to compare (default: the builder's, builder.Packer.Limit)")
	before := flag.Bool("before", false, "also pack as the builder did before issue 15 (NumCPU layers at once, manifest order)")
	noFloor := flag.Bool("nofloor", false, "skip the floor (for quick comparisons of packers: no ratio then)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the packs (not the floor) to this file")
	flag.Parse()

	root := *dir
	if root == "" {
		var err error
		if root, err = os.MkdirTemp("", "nixery-coldpack-"); err != nil {
			fail(err)
		}
	}
	if !*keep {
		defer os.RemoveAll(root)
	}
	generated, bytes, err := storegen.Generate(filepath.Join(root, "nix", "store"), int64(*total)*1e6)
	if err != nil {
		fail(err)
	}
	paths := make([]layers.Path, len(generated))
	dirs := make([]string, len(generated))
	for i, p := range generated {
		paths[i] = layers.Path{Name: p.Dir, Size: p.Size, References: p.Refs}
		dirs[i] = p.Dir
	}
	groups := layers.GroupWith(paths, *budget-1, layers.Options{})
	biggest := 0
	for _, g := range groups {
		biggest = max(biggest, len(g))
	}
	fmt.Printf("closure: %d store paths, %.0f MB of file data, %d layers at budget %d (largest: %d paths); GOMAXPROCS %d (%d CPUs)\n",
		len(paths), float64(bytes)/1e6, len(groups), *budget, biggest, runtime.GOMAXPROCS(0), runtime.NumCPU())
	if load, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Printf("load average before: %s", load)
	}
	fmt.Println()

	// Warm the page cache: the floor reads the files first.
	if err := readAll(dirs); err != nil {
		fail(err)
	}

	floorSecs, floorSize := 0.0, int64(0)
	if !*noFloor {
		if floorSecs, floorSize, err = floor(dirs); err != nil {
			fail(fmt.Errorf("floor: %w", err))
		}
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fail(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fail(err)
		}
		defer pprof.StopCPUProfile()
	}

	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 1, ' ', tabwriter.AlignRight|tabwriter.Debug)
	fmt.Fprintln(tw, "packer\tseconds\tratio to floor\tcompressed MB\tsize vs floor\tCPU seconds\tin Commit (sum)\t")
	fmt.Fprintf(tw, "floor: tar | gzip -6 | sha256sum, 1 thread\t%.2f\t1.000\t%.1f\t\t\t\t\n", floorSecs, float64(floorSize)/1e6)
	run := 0
	limits := []int{(&builder.Packer{}).Concurrency()}
	if *concurrent != "" {
		limits = nil
		for _, c := range strings.Split(*concurrent, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(c))
			if err != nil || n < 1 {
				fail(fmt.Errorf("-concurrent %q: want a positive number", c))
			}
			limits = append(limits, n)
		}
	}
	type variant struct {
		limit  int
		before bool
	}
	var variants []variant
	if *before {
		variants = append(variants, variant{runtime.NumCPU(), true})
	}
	for _, n := range limits {
		variants = append(variants, variant{n, false})
	}
	for _, l := range strings.Split(*levels, ",") {
		level, err := strconv.Atoi(strings.TrimSpace(l))
		if err != nil {
			fail(fmt.Errorf("-level %q: %w", l, err))
		}
		for i := range max(1, *repeat) * len(variants) {
			v := variants[i%len(variants)]
			run++
			store, err := storage.NewFilesystem(filepath.Join(root, fmt.Sprintf("storage-%d", run)))
			if err != nil {
				fail(err)
			}
			runtime.GC()
			cpu0 := cpuSeconds()
			start := time.Now()
			opts := archive.Options{Level: level}
			var size int64
			var commit time.Duration
			if v.before {
				size, commit, err = packBefore(context.Background(), store, groups, opts)
			} else {
				size, commit, err = pack(context.Background(), store, groups, v.limit, opts)
			}
			secs := time.Since(start).Seconds()
			cpu := cpuSeconds() - cpu0
			if err != nil {
				fail(fmt.Errorf("level %d: %w", level, err))
			}
			fmt.Fprintf(tw, "nixery%s: %d layers, gzip level %d, %d at once\t%.2f\t%.3f\t%.1f\t%+.2f %%\t%.2f\t%.2f\t\n", map[bool]string{true: " before issue 15"}[v.before], len(groups), level, v.limit, secs,
				secs/floorSecs, float64(size)/1e6, 100*(float64(size)/float64(floorSize)-1), cpu, commit.Seconds())
			os.RemoveAll(filepath.Join(root, fmt.Sprintf("storage-%d", run)))
		}
	}
	tw.Flush()
	if load, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Printf("\nload average after: %s", load)
	}
}

// floor runs tar | gzip -6 | sha256sum over dirs as real processes and
// returns the seconds until sha256sum has printed the digest, and the bytes
// gzip wrote (counted on their way from gzip to sha256sum).
func floor(dirs []string) (float64, int64, error) {
	args := []string{"-cf", "-", "-C", "/"}
	for _, d := range dirs {
		args = append(args, strings.TrimPrefix(d, "/"))
	}
	tarCmd := exec.Command("tar", args...)
	gz := exec.Command("gzip", "-6")
	sum := exec.Command("sha256sum")
	tarOut, err := tarCmd.StdoutPipe()
	if err != nil {
		return 0, 0, err
	}
	gz.Stdin = tarOut
	gzOut, err := gz.StdoutPipe()
	if err != nil {
		return 0, 0, err
	}
	sumIn, err := sum.StdinPipe()
	if err != nil {
		return 0, 0, err
	}
	var digest strings.Builder
	sum.Stdout = &digest
	tarCmd.Stderr, gz.Stderr, sum.Stderr = os.Stderr, os.Stderr, os.Stderr

	start := time.Now()
	for _, c := range []*exec.Cmd{tarCmd, gz, sum} {
		if err := c.Start(); err != nil {
			return 0, 0, err
		}
	}
	n, copyErr := io.Copy(sumIn, gzOut)
	sumIn.Close()
	for _, c := range []*exec.Cmd{tarCmd, gz, sum} {
		if err := c.Wait(); err != nil {
			return 0, 0, fmt.Errorf("%s: %w", c.Path, err)
		}
	}
	secs := time.Since(start).Seconds()
	if copyErr != nil {
		return 0, 0, copyErr
	}
	if len(strings.Fields(digest.String())) == 0 {
		return 0, 0, fmt.Errorf("sha256sum printed nothing")
	}
	return secs, n, nil
}

// readAll reads every file under dirs once.
func readAll(dirs []string) error {
	h := sha256.New()
	for _, d := range dirs {
		err := filepath.Walk(d, func(p string, info os.FileInfo, err error) error {
			if err != nil || !info.Mode().IsRegular() {
				return err
			}
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.Copy(h, f)
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// cpuSeconds is the user and system CPU time of this process so far.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "coldpack:", err)
	os.Exit(1)
}

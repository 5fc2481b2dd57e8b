// Command sharing measures how many bytes a layer-caching client downloads
// when it pulls a sequence of typical images, for Nixery's layering and
// for the algorithms it is compared with.
//
//	go run ./bench/sharing                          # budgets 100, 30 and 24, seed 1
//	go run ./bench/sharing -budget 100,30,24,20     # the tables of docs/layering.md
//	go run ./bench/sharing -budget 20 -seed 7
//	go run ./bench/sharing -seeds 1-5 -budget 30,24,20   # this package's rows only, per seed and mean
//	go run ./bench/sharing -shape stacks             # the second, differently shaped package set
//
// The package set is generated (package bench/pkgset), shaped like nixpkgs; the
// popularity table is derived from it as the original Nixery derives its
// table from the binary cache. A layer is downloaded only if its exact set
// of store paths (hence, with deterministic packing, its digest) was not
// downloaded before. Bytes are uncompressed NAR bytes; the customisation
// layer is counted as a layer but not in bytes (it is per image anyway).
package main

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/nixery/nixery/bench/pkgset"
	"github.com/nixery/nixery/internal/layers"
)

// algorithm groups one image's closure into at most budget groups.
type algorithm struct {
	name  string
	group func(im *image, paths []layers.Path, budget int) [][]string
}

type result struct {
	downloaded int64
	maxLayers  int
	overBudget int
	perImage   []int64
	excess     []int64 // per image: downloaded minus the bytes of store paths no earlier image had
	// floor is per image the excess that no grouping of that image alone
	// could avoid, given the layers the earlier images were split into:
	// the bytes of its store paths that an earlier image had but no
	// earlier layer lying wholly inside its closure holds (budget ignored).
	floor []int64
}

func main() {
	seed := flag.Uint64("seed", 1, "seed of the generated package set")
	shapeFlag := flag.String("shape", "tower", "shape of the generated package set: tower (the figures of docs/layering.md) or stacks (see bench/pkgset)")
	seedsFlag := flag.String("seeds", "", "several seeds (e.g. 1-5 or 1,3,7): print only this package's two rows, per seed and their mean")
	budgetFlag := flag.String("budget", "100,30,24", "layer budgets per image (customisation layer included), comma-separated")
	verbose := flag.Bool("v", false, "print per-image downloads, excess over the bytes first seen in that image, and the part of it the earlier images' layers force")
	flag.Parse()

	var budgets []int
	for _, f := range strings.Split(*budgetFlag, ",") {
		b, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || b < 2 {
			fmt.Fprintf(os.Stderr, "bad budget %q\n", f)
			os.Exit(2)
		}
		budgets = append(budgets, b)
	}
	shape, ok := pkgset.Shapes[*shapeFlag]
	if !ok {
		fmt.Fprintf(os.Stderr, "unknown shape %q\n", *shapeFlag)
		os.Exit(2)
	}
	if *seedsFlag != "" {
		seeds, err := parseSeeds(*seedsFlag)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		if err := summary(seeds, shape, budgets); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}

	set := pkgset.GenerateShape(*seed, shape)
	pop := set.Popularity()
	threshold := popularityThreshold(pop)
	algs := algorithms(pop)

	closures, lower, distinct, maxPaths, err := workload(set)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("package set: %d store paths (seed %d); workload: %d images, %d distinct store paths, largest closure %d paths\n",
		len(set.Paths), *seed, len(pkgset.Workload), distinct, maxPaths)
	fmt.Printf("popularity table: %d names; original Nixery's popularity threshold (top 1%%): %d\n\n", len(pop), threshold)

	for _, budget := range budgets {
		fmt.Printf("budget %d layers per image (%d for store paths + 1 customisation layer); bytes = uncompressed NAR bytes\n\n", budget, budget-1)
		tw := tabwriter.NewWriter(os.Stdout, 0, 0, 1, ' ', tabwriter.AlignRight|tabwriter.Debug)
		fmt.Fprintln(tw, "algorithm\tdownloaded MiB\t× lower bound\tmax layers/image\timages over budget\t")
		fmt.Fprintf(tw, "lower bound (distinct store paths)\t%.1f\t1.00\t\t\t\n", mib(lower))
		for _, alg := range algs {
			r, err := simulate(set, closures, alg, budget-1)
			if err != nil {
				fmt.Fprintf(os.Stderr, "%s: %v\n", alg.name, err)
				os.Exit(1)
			}
			fmt.Fprintf(tw, "%s\t%.1f\t%.3f\t%d\t%d\t\n", alg.name, mib(r.downloaded), float64(r.downloaded)/float64(lower), r.maxLayers+1, r.overBudget)
			if *verbose {
				for i, b := range r.perImage {
					fmt.Fprintf(tw, "  %s\t%.1f\texcess %.1f\tforced %.1f\t\t\n", pkgset.Workload[i], mib(b), mib(r.excess[i]), mib(r.floor[i]))
				}
			}
		}
		tw.Flush()
		fmt.Println()
	}
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// workload resolves the closure of every image of the workload and returns
// them with the lower bound (the bytes of the distinct store paths), the
// number of distinct paths and the largest closure.
func workload(set *pkgset.Set) (closures [][]*pkgset.Path, lower int64, distinct, maxPaths int, err error) {
	seen := map[string]int64{}
	for _, img := range pkgset.Workload {
		c, err := set.Closure(pkgset.Packages(img))
		if err != nil {
			return nil, 0, 0, 0, err
		}
		closures = append(closures, c)
		maxPaths = max(maxPaths, len(c))
		for _, p := range c {
			seen[p.Path] = p.Size
		}
	}
	for _, s := range seen {
		lower += s
	}
	return closures, lower, len(seen), maxPaths, nil
}

// parseSeeds reads "1-5" or "1,3,7".
func parseSeeds(s string) ([]uint64, error) {
	var out []uint64
	for _, f := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(f), "-")
		a, err := strconv.ParseUint(lo, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("bad seeds %q", s)
		}
		b := a
		if isRange {
			if b, err = strconv.ParseUint(hi, 10, 64); err != nil || b < a {
				return nil, fmt.Errorf("bad seeds %q", s)
			}
		}
		for x := a; x <= b; x++ {
			out = append(out, x)
		}
	}
	return out, nil
}

// summary prints, per seed and budget, layers.Group / layers.GroupWith as
// × the lower bound, and the mean over the seeds: the figures
// docs/layering.md compares approaches by.
func summary(seeds []uint64, shape pkgset.Shape, budgets []int) error {
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 1, ' ', tabwriter.AlignRight|tabwriter.Debug)
	fmt.Fprint(tw, "seed\tlower bound MiB\t")
	for _, b := range budgets {
		fmt.Fprintf(tw, "budget %d\t", b)
	}
	fmt.Fprintln(tw)
	sum := make([][2]float64, len(budgets))
	for _, seed := range seeds {
		set := pkgset.GenerateShape(seed, shape)
		algs := algorithms(set.Popularity())
		closures, lower, _, _, err := workload(set)
		if err != nil {
			return err
		}
		fmt.Fprintf(tw, "%d\t%.1f\t", seed, mib(lower))
		for k, budget := range budgets {
			var x [2]float64
			for m, name := range []string{"layers.Group (graph only)", "layers.GroupWith (popularity)"} {
				i := slices.IndexFunc(algs, func(a algorithm) bool { return a.name == name })
				r, err := simulate(set, closures, algs[i], budget-1)
				if err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
				if r.overBudget > 0 {
					return fmt.Errorf("%s, budget %d, seed %d: %d images over budget", name, budget, seed, r.overBudget)
				}
				x[m] = float64(r.downloaded) / float64(lower)
				sum[k][m] += x[m]
			}
			fmt.Fprintf(tw, "%.3f / %.3f\t", x[0], x[1])
		}
		fmt.Fprintln(tw)
	}
	fmt.Fprint(tw, "mean\t\t")
	for k := range budgets {
		fmt.Fprintf(tw, "%.3f / %.3f\t", sum[k][0]/float64(len(seeds)), sum[k][1]/float64(len(seeds)))
	}
	fmt.Fprintln(tw)
	return tw.Flush()
}

// simulate pulls the workload in order with a client-side layer cache.
func simulate(set *pkgset.Set, closures [][]*pkgset.Path, alg algorithm, budget int) (result, error) {
	var r result
	cache := map[string]bool{}
	pulled := map[string]bool{}
	var earlier [][]string // the distinct layers of the images before
	for i, c := range closures {
		paths := make([]layers.Path, len(c))
		size := map[string]int64{}
		var roots []string
		for j, p := range c {
			paths[j] = layers.Path{Name: p.Path, Size: p.Size, References: p.Refs}
			size[p.Path] = p.Size
		}
		for _, a := range pkgset.Packages(pkgset.Workload[i]) {
			roots = append(roots, set.Paths[set.Attrs[a]].Path)
		}
		groups := alg.group(newImage(c, roots), paths, budget)
		if err := checkPartition(c, groups); err != nil {
			return r, fmt.Errorf("%s: %w", pkgset.Workload[i], err)
		}
		r.maxLayers = max(r.maxLayers, len(groups))
		if len(groups) > budget {
			r.overBudget++
		}
		covered := map[string]bool{}
		for _, l := range earlier {
			if !slices.ContainsFunc(l, func(p string) bool { _, in := size[p]; return !in }) {
				for _, p := range l {
					covered[p] = true
				}
			}
		}
		var got, fresh, forced int64
		for _, p := range c {
			switch {
			case !pulled[p.Path]:
				pulled[p.Path] = true
				fresh += p.Size
			case !covered[p.Path]:
				forced += p.Size
			}
		}
		for _, g := range groups {
			k := strings.Join(g, "\n")
			if cache[k] {
				continue
			}
			cache[k] = true
			earlier = append(earlier, g)
			for _, p := range g {
				got += size[p]
			}
		}
		r.perImage = append(r.perImage, got)
		r.excess = append(r.excess, got-fresh)
		r.floor = append(r.floor, forced)
		r.downloaded += got
	}
	return r, nil
}

// checkPartition verifies that groups hold every path of the closure
// exactly once, each group sorted.
func checkPartition(c []*pkgset.Path, groups [][]string) error {
	seen := map[string]int{}
	for _, g := range groups {
		if !slices.IsSorted(g) {
			return fmt.Errorf("group not sorted")
		}
		for _, p := range g {
			seen[p]++
		}
	}
	if len(seen) != len(c) {
		return fmt.Errorf("%d paths in groups, closure has %d", len(seen), len(c))
	}
	for _, p := range c {
		if seen[p.Path] != 1 {
			return fmt.Errorf("%s in %d groups", p.Path, seen[p.Path])
		}
	}
	return nil
}

// algorithms lists the groupings compared; pop is the popularity table.
func algorithms(pop map[string]int) []algorithm {
	threshold := popularityThreshold(pop)
	return []algorithm{
		{"nixery-original (no popularity)", func(im *image, _ []layers.Path, b int) [][]string { return nixeryGroups(im, b, nil, 0) }},
		{"nixery-original (popularity)", func(im *image, _ []layers.Path, b int) [][]string { return nixeryGroups(im, b, pop, threshold) }},
		{"nixpkgs auto-layer", func(im *image, _ []layers.Path, b int) [][]string { return autoLayerGroups(im, b) }},
		{"previous layers.Group (graph only)", func(im *image, _ []layers.Path, b int) [][]string { return previousGroups(im, b, nil) }},
		{"previous layers.GroupWith (popularity)", func(im *image, _ []layers.Path, b int) [][]string { return previousGroups(im, b, pop) }},
		{"layers.Group (graph only)", func(_ *image, p []layers.Path, b int) [][]string { return layers.Group(p, b) }},
		{"layers.GroupWith (popularity)", func(_ *image, p []layers.Path, b int) [][]string {
			return layers.GroupWith(p, b, layers.Options{Popularity: pop})
		}},
	}
}

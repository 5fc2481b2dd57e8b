// Package layers decides which store paths of an image's closure travel
// together in one image layer.
//
// It is a pure function of the closure graph (store paths with their NAR
// sizes and references), optional popularity data and a layer budget: no
// Nix, no I/O. The archive package then packs each group into one tarball.
//
// # What a good grouping is
//
// A client downloads a layer unless it already has a blob with the same
// digest, and the digest depends only on the layer's set of store paths. So
// a group of store paths saves bytes only if the very same set appears in
// other images. A store path alone in its layer is always such a set; a
// group of several paths is one only if its members always come together,
// whatever else is in the image. Big paths want a layer of their own, since
// a cache miss costs their size; widely shared paths too, since every image
// that has them could miss.
//
// # Algorithm
//
//  1. Units. Without popularity data every path is a unit. With it, a path
//     that the table says is referred to by at most one store path of the
//     whole package set, and that has exactly one referrer in the closure,
//     joins its referrer's unit (transitively: a chain of private paths
//     joins the first path that is not private). Such a path is in an image
//     exactly when its referrer is, so the unit has the same members — the
//     same bytes, the same digest — in every image, and merging it costs no
//     sharing at all while it saves layers. Units are formed whatever the
//     budget, so that an image within budget and one over it agree.
//  2. If there are no more units than the budget, every unit is a group.
//  3. Otherwise the image is grouped root by root. A root is a path (or a
//     cycle) that nothing in the closure refers to: in practice a requested
//     package. Each root's closure is grouped as it would be alone — its
//     units if they fit, else its budget-1 most valuable units alone and
//     all its other units in one group — the root with the largest closure
//     (in paths) first; a path that an earlier root has placed stays there.
//     If that makes more groups than the budget, the budget-1 largest (NAR
//     bytes) stay and the others share the last group. A unit's value is
//     its NAR size times log2(2 + r), r the number of store paths referring
//     to it (the popularity count, or without popularity data the referrers
//     in the closure): a cache miss costs the layer's bytes, and a path that
//     many refer to is in many images that could miss it.
//  4. Groups are ordered by the number of paths in the closure of their
//     lowest member, then by name. That order is the same in every image (a
//     path's closure does not depend on the image) and puts dependencies
//     before what depends on them: glibc and the other shared bases come
//     first, where a client that re-pulls a layer whose position changed
//     finds them unchanged.
//
// Step 3 is what keeps layers shared between an image and its unions: the
// groups of a package depend only on its own closure, so adding smaller
// packages to an image ("emacs" → "shell/emacs/git") leaves the biggest
// package's layers as they were, and only the few smallest groups of the
// union are new. The single shared group of step 3 holds the smallest
// units; it is the only group that differs from image to image.
//
// This beats the published approaches on the benchmark in bench/sharing
// (figures in docs/layering.md): the original Nixery's dominator-tree
// grouping merges every path reached through one requested package into
// that package's layer, so glibc and other bases travel again in most
// images; nixpkgs' auto-layer merges a big path with the dependencies only
// it uses in this image, which differ from image to image. Both change the
// digest of big layers between images; this algorithm never merges a big
// path with anything that may be absent elsewhere.
//
// # Worked example
//
// Budget 3, closure (size, references):
//
//	hello   10 MB → glibc, libidn
//	glibc   30 MB
//	libidn   1 MB → glibc
//	bash     5 MB → glibc
//
// Without popularity data there are four units for three groups. The
// roots are hello (closure: 3 paths) and bash (2). hello's closure alone
// fits: [glibc] [libidn] [hello]; bash's adds [bash] (glibc is placed
// already). Of these four groups the two largest, glibc (30) and hello
// (10), stay and {bash, libidn} share the third. Closure sizes in paths:
// glibc 1, libidn 2, bash 2, hello 3, so the result is
//
//	[[glibc] [bash libidn] [hello]]
//
// With the popularity table {"glibc": 900, "bash": 40, "libidn": 1} libidn
// is private to hello, which is its only referrer here too: the units are
// {glibc}, {bash} and {hello, libidn}, which fit the budget:
//
//	[[glibc] [bash] [hello libidn]]
//
// and {hello, libidn} is the same layer in every image that has hello.
//
// Group and GroupWith keep the contract of the simple grouping they
// replaced: each path in exactly one group, at most budget groups, sorted
// names, the same output for the same input in any order.
package layers

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/bits"
	"path"
	"slices"
)

// Path is one store path of a closure.
type Path struct {
	Name       string   // store path, /nix/store/…
	Size       int64    // NAR size in bytes
	References []string // store paths it refers to (others than the input's and itself are ignored)
}

// Options tune GroupWith. The zero value groups from the graph alone.
type Options struct {
	// Popularity says how widely each store path is used in the package
	// set, keyed by store path name without the /nix/store/<hash>- prefix
	// (see Name), e.g. "glibc-2.40-66" → 8123. It is the popularity.json of
	// the original Nixery (see ParsePopularity): how many store paths of
	// the package set refer to the path. A count of at most 1 marks a
	// private path (step 1 of the package doc); otherwise a count enters
	// only as log2(2 + count) in a unit's value (step 3). Paths missing
	// from the table count as 0.
	Popularity map[string]int
}

// Group is GroupWith without popularity data.
func Group(paths []Path, budget int) [][]string {
	return GroupWith(paths, budget, Options{})
}

// GroupWith splits the closure into at most budget groups of store paths.
// Every path is in exactly one group; each group's names are sorted; the
// result is deterministic (same input in any order → same output).
// budget < 1 means 1. Paths listed twice are merged (largest size, union of
// references). See the package documentation for the algorithm.
func GroupWith(paths []Path, budget int, opts Options) [][]string {
	budget = max(budget, 1)
	g := newGraph(paths)
	n := len(g.names)
	if n == 0 {
		return nil
	}
	c := g.closures()

	var groups [][]int
	if units := g.units(opts); len(units) <= budget {
		groups = units
	} else {
		groups = g.byRoots(c, budget, opts)
	}

	// Members are sorted indices, so grp[0] is the group's first name.
	key := func(grp []int) int {
		k := math.MaxInt
		for _, i := range grp {
			k = min(k, c.count[i])
		}
		return k
	}
	for _, grp := range groups {
		slices.Sort(grp)
	}
	slices.SortFunc(groups, func(a, b []int) int {
		if c := cmp.Compare(key(a), key(b)); c != 0 {
			return c
		}
		return cmp.Compare(a[0], b[0])
	})

	out := make([][]string, len(groups))
	for i, grp := range groups {
		names := make([]string, len(grp))
		for j, k := range grp {
			names[j] = g.names[k]
		}
		out[i] = names
	}
	return out
}

// byRoots groups a closure that does not fit the budget (step 3 of the
// package doc): every root — a path, or a cycle, nothing in the closure
// refers to — is grouped as its own closure alone would be (see solo), the
// root with the largest closure first; a path already placed by an earlier
// root stays there. If the groups are more than the budget, the budget-1
// largest (NAR bytes, ties by name) stay and the others share one group.
// It walks each root's closure once: time O(roots × closure), memory O(closure)
// beyond the closures themselves.
func (g *graph) byRoots(c *closures, budget int, opts Options) [][]int {
	n := len(g.names)
	ncomp := len(c.desc)
	referred := make([]bool, ncomp)
	for i, refs := range g.refs {
		for _, j := range refs {
			if c.comp[j] != c.comp[i] {
				referred[c.comp[j]] = true
			}
		}
	}
	// One root per component that nothing refers to, named by its first
	// member (members are in name order).
	var roots []int
	seen := make([]bool, ncomp)
	for i := range n {
		if k := c.comp[i]; !referred[k] && !seen[k] {
			seen[k] = true
			roots = append(roots, i)
		}
	}
	// Largest closure first; roots are in name order, so a stable sort
	// breaks ties by name.
	slices.SortStableFunc(roots, func(a, b int) int { return cmp.Compare(c.count[b], c.count[a]) })

	owned := make([]bool, n)
	local := make([]int, n)
	var groups [][]int
	var members []int
	for _, r := range roots {
		members = members[:0]
		for w, word := range c.desc[c.comp[r]] {
			for word != 0 {
				members = append(members, w*64+bits.TrailingZeros64(word))
				word &= word - 1
			}
		}
		for _, grp := range g.sub(members, local).solo(budget, opts) {
			var keep []int
			for _, k := range grp {
				if i := members[k]; !owned[i] {
					owned[i] = true
					keep = append(keep, i)
				}
			}
			if len(keep) > 0 {
				groups = append(groups, keep)
			}
		}
	}
	if len(groups) <= budget {
		return groups
	}
	// In name order of their first member, as split wants them.
	for _, grp := range groups {
		slices.Sort(grp)
	}
	slices.SortFunc(groups, func(a, b []int) int { return cmp.Compare(a[0], b[0]) })
	bytes := make([]int64, len(groups))
	for k, grp := range groups {
		for _, i := range grp {
			bytes[k] += g.sizes[i]
		}
	}
	return g.split(groups, budget, func(k int) float64 { return float64(bytes[k]) })
}

// solo groups a closure with a single root as GroupWith would group it
// alone: its units, or if they are more than the budget, the budget-1 most
// valuable units alone and the others in one group.
func (g *graph) solo(budget int, opts Options) [][]int {
	units := g.units(opts)
	if len(units) <= budget {
		return units
	}
	value := g.values(units, opts)
	return g.split(units, budget, func(k int) float64 { return value[k] })
}

// values returns every unit's value: the larger, the more it deserves a
// layer of its own. A layer's bytes are what a cache miss costs, and a path
// that many others refer to is in many images, each of which could miss it:
// the value is the unit's NAR size times log2(2 + r), where r is the number
// of store paths referring to the unit's most referred-to member — the
// popularity count with popularity data, else the referrers in this closure.
// The logarithm keeps the counts of nixpkgs' base libraries (glibc: tens of
// thousands) from outweighing size altogether; bench/sharing measured it
// against size alone and against √(1 + r) (docs/layering.md).
func (g *graph) values(units [][]int, opts Options) []float64 {
	referrers := make([]int, len(g.names))
	for _, refs := range g.refs {
		for _, j := range refs {
			referrers[j]++
		}
	}
	value := make([]float64, len(units))
	for k, u := range units {
		var size int64
		r := 0
		for _, i := range u {
			size += g.sizes[i]
			if opts.Popularity != nil {
				r = max(r, opts.Popularity[Name(g.names[i])])
			} else {
				r = max(r, referrers[i])
			}
		}
		value[k] = float64(size) * math.Log2(float64(2+r))
	}
	return value
}

// sub returns the graph restricted to members (sorted indices of a closure,
// so every reference of a member is a member): index k of the result is
// members[k]. local is scratch space of len(g.names) entries.
func (g *graph) sub(members []int, local []int) *graph {
	for k, i := range members {
		local[i] = k
	}
	s := &graph{names: make([]string, len(members)), sizes: make([]int64, len(members)), refs: make([][]int, len(members))}
	for k, i := range members {
		s.names[k] = g.names[i]
		s.sizes[k] = g.sizes[i]
		s.refs[k] = make([]int, len(g.refs[i]))
		for r, j := range g.refs[i] {
			s.refs[k][r] = local[j]
		}
	}
	return s
}

// units returns the paths grouped by private attachment (step 1 of the
// package doc): with popularity data, a path that the table says only one
// store path refers to, and that has exactly one referrer in the closure,
// joins its referrer's unit, transitively. Without popularity data every
// path is a unit of its own.
func (g *graph) units(opts Options) [][]int {
	n := len(g.names)
	parent := make([]int, n)
	for i := range parent {
		parent[i] = i
	}
	if opts.Popularity != nil {
		referrers := make([][]int, n)
		for i, refs := range g.refs {
			for _, j := range refs {
				referrers[j] = append(referrers[j], i)
			}
		}
		for d := range n {
			pop, known := opts.Popularity[Name(g.names[d])]
			if known && pop <= 1 && len(referrers[d]) == 1 {
				parent[d] = referrers[d][0]
			}
		}
	}
	// Follow parents to the top of each chain; a cycle of private paths
	// (not seen in real closures) ends at its smallest index.
	top := make([]int, n)
	for i := range n {
		j, steps := i, 0
		for parent[j] != j && steps <= n {
			j = parent[j]
			steps++
		}
		if steps > n {
			j = i
		}
		top[i] = j
	}
	byTop := map[int]int{}
	var units [][]int
	for i := range n {
		if k, ok := byTop[top[i]]; ok {
			units[k] = append(units[k], i)
		} else {
			byTop[top[i]] = len(units)
			units = append(units, []int{i})
		}
	}
	return units
}

// split fits units into budget groups: the budget-1 most valuable units
// (value(k) for units[k]) keep a group each and the rest share the last
// one.
func (g *graph) split(units [][]int, budget int, value func(k int) float64) [][]int {
	uv := make([]float64, len(units))
	for k := range units {
		uv[k] = value(k)
	}
	order := make([]int, len(units))
	for i := range order {
		order[i] = i
	}
	// Units are in index order of their first member, so a stable sort
	// breaks ties by name.
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(uv[b], uv[a]) })
	var groups [][]int
	for _, k := range order[:budget-1] {
		groups = append(groups, units[k])
	}
	var rest []int
	for _, k := range order[budget-1:] {
		rest = append(rest, units[k]...)
	}
	return append(groups, rest)
}

// Name is a store path's name without the store directory and the hash:
// "/nix/store/<32 characters>-glibc-2.40-66" → "glibc-2.40-66". Anything
// that does not look like a store path keeps its base name.
func Name(storePath string) string {
	base := path.Base(storePath)
	if len(base) > 33 && base[32] == '-' {
		return base[33:]
	}
	return base
}

// ParsePopularity reads popularity data in the format of the original
// Nixery's popularity.json: one JSON object mapping store path names
// without hash (see Name) to non-negative integers.
func ParsePopularity(r io.Reader) (map[string]int, error) {
	var pop map[string]int
	dec := json.NewDecoder(r)
	if err := dec.Decode(&pop); err != nil {
		return nil, fmt.Errorf("popularity data: %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("popularity data: more than one JSON value")
	}
	if pop == nil {
		return nil, fmt.Errorf("popularity data: not a JSON object")
	}
	for name, n := range pop {
		if n < 0 {
			return nil, fmt.Errorf("popularity data: %q has negative count %d", name, n)
		}
	}
	return pop, nil
}

// graph is the closure with paths numbered in name order and references
// restricted to the closure, without self-references.
type graph struct {
	names []string
	sizes []int64
	refs  [][]int
}

func newGraph(paths []Path) *graph {
	index := make(map[string]int, len(paths))
	var names []string
	for _, p := range paths {
		if _, ok := index[p.Name]; !ok {
			index[p.Name] = 0
			names = append(names, p.Name)
		}
	}
	slices.Sort(names)
	for i, name := range names {
		index[name] = i
	}

	g := &graph{names: names, sizes: make([]int64, len(names)), refs: make([][]int, len(names))}
	for _, p := range paths {
		i := index[p.Name]
		g.sizes[i] = max(g.sizes[i], p.Size)
		for _, r := range p.References {
			if j, ok := index[r]; ok && j != i {
				g.refs[i] = append(g.refs[i], j)
			}
		}
	}
	for i := range g.refs {
		slices.Sort(g.refs[i])
		g.refs[i] = slices.Compact(g.refs[i])
	}
	return g
}

// closures holds, for every path, the set of paths it reaches (itself
// included) and two counts derived from it.
type closures struct {
	comp  []int      // path → strongly connected component
	desc  [][]uint64 // component → bit set of the paths it reaches
	count []int      // path → number of paths in its closure, itself included
}

// closures computes the closure of every path.
//
// Nix closures are acyclic apart from self-references, but Group accepts
// any input, so this collapses strongly connected components (Tarjan) and
// propagates bit sets of descendants over the resulting DAG: O(n²/64)
// memory, a few MB for the largest closures seen in practice.
func (g *graph) closures() *closures {
	n := len(g.names)
	comp, ncomp := g.components()

	// Tarjan numbers components in reverse topological order: every edge
	// leads to a component with a smaller or equal number, so visiting
	// components in increasing order sees descendants first.
	words := (n + 63) / 64
	desc := make([][]uint64, ncomp)
	members := make([][]int, ncomp)
	for i := range n {
		members[comp[i]] = append(members[comp[i]], i)
	}
	for c := range ncomp {
		set := make([]uint64, words)
		for _, i := range members[c] {
			set[i/64] |= 1 << (i % 64)
			for _, j := range g.refs[i] {
				if cj := comp[j]; cj != c {
					for w, bitsW := range desc[cj] {
						set[w] |= bitsW
					}
				}
			}
		}
		desc[c] = set
	}

	cl := &closures{comp: comp, desc: desc, count: make([]int, n)}
	for i := range n {
		for _, word := range desc[comp[i]] {
			cl.count[i] += bits.OnesCount64(word)
		}
	}
	return cl
}

// components labels the strongly connected components of g with Tarjan's
// algorithm, iteratively so that long reference chains cannot exhaust the
// stack.
func (g *graph) components() (comp []int, ncomp int) {
	n := len(g.names)
	const unvisited = -1
	index := make([]int, n)
	low := make([]int, n)
	onStack := make([]bool, n)
	comp = make([]int, n)
	for i := range index {
		index[i] = unvisited
	}
	var stack []int
	type frame struct{ v, next int }
	var calls []frame
	counter := 0

	for root := range n {
		if index[root] != unvisited {
			continue
		}
		calls = append(calls, frame{root, 0})
		index[root], low[root] = counter, counter
		counter++
		stack = append(stack, root)
		onStack[root] = true

		for len(calls) > 0 {
			f := &calls[len(calls)-1]
			v := f.v
			if f.next < len(g.refs[v]) {
				w := g.refs[v][f.next]
				f.next++
				switch {
				case index[w] == unvisited:
					index[w], low[w] = counter, counter
					counter++
					stack = append(stack, w)
					onStack[w] = true
					calls = append(calls, frame{w, 0})
				case onStack[w]:
					low[v] = min(low[v], index[w])
				}
				continue
			}
			// v is finished.
			calls = calls[:len(calls)-1]
			if len(calls) > 0 {
				parent := calls[len(calls)-1].v
				low[parent] = min(low[parent], low[v])
			}
			if low[v] == index[v] {
				for {
					w := stack[len(stack)-1]
					stack = stack[:len(stack)-1]
					onStack[w] = false
					comp[w] = ncomp
					if w == v {
						break
					}
				}
				ncomp++
			}
		}
	}
	return comp, ncomp
}

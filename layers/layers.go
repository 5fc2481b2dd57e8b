// Package layers decides which store paths of an image's closure travel
// together in one image layer.
//
// It is a pure function of the closure graph (store paths with their NAR
// sizes and references) and a layer budget: no Nix, no I/O. The archive
// package then packs each group into one tarball.
//
// # Algorithm
//
// The current grouping is deliberately simple and stable, so that a store
// path tends to land in the same single-path layer — and thus the same blob
// digest — in every image that contains it:
//
//  1. If the closure has no more paths than the budget, every path gets a
//     layer of its own.
//  2. Otherwise the budget-1 largest paths (ties broken by name) get a layer
//     each, and all remaining paths share the last one.
//  3. Groups are ordered so that the ones most depended upon come first:
//     a group's weight is the largest number of other closure paths that
//     reach one of its members through references; heavier groups first,
//     ties broken by the group's first name. Shared base layers (glibc …)
//     thus sit at the bottom of every image.
//
// Worked example, budget 3, closure (size, references):
//
//	hello   10 MB → glibc, libidn
//	glibc   30 MB
//	libidn   1 MB → glibc
//	bash     5 MB → glibc
//
// Four paths exceed the budget of 3, so the two largest (glibc 30, hello 10)
// get a layer each and {bash, libidn} share the third. Reach counts: glibc
// is reached by hello, libidn and bash (3); libidn by hello (1); bash and
// hello by nobody (0). Weights: {glibc}=3, {bash, libidn}=1, {hello}=0, so
// the result is
//
//	[[glibc] [bash libidn] [hello]]
//
// A later, sharing-optimised grouping will replace step 2; the contract of
// Group (each path in exactly one group, at most budget groups, sorted
// names, deterministic) stays.
package layers

import (
	"cmp"
	"math/bits"
	"slices"
)

// Path is one store path of a closure.
type Path struct {
	Name       string   // store path, /nix/store/…
	Size       int64    // NAR size in bytes
	References []string // store paths it refers to (others than the input's and itself are ignored)
}

// Group splits the closure into at most budget groups of store paths.
// Every path is in exactly one group; each group's names are sorted; the
// result is deterministic (same input in any order → same output).
// budget < 1 means 1. Paths listed twice are merged (largest size, union of
// references). See the package documentation for the algorithm.
func Group(paths []Path, budget int) [][]string {
	budget = max(budget, 1)
	g := newGraph(paths)
	n := len(g.names)
	if n == 0 {
		return nil
	}

	var groups [][]int
	if n <= budget {
		for i := range n {
			groups = append(groups, []int{i})
		}
	} else {
		bySize := make([]int, n)
		for i := range bySize {
			bySize[i] = i
		}
		// Indices are in name order, so a stable sort breaks size ties by name.
		slices.SortStableFunc(bySize, func(a, b int) int { return cmp.Compare(g.sizes[b], g.sizes[a]) })
		for _, i := range bySize[:budget-1] {
			groups = append(groups, []int{i})
		}
		rest := slices.Clone(bySize[budget-1:])
		slices.Sort(rest)
		groups = append(groups, rest)
	}

	reach := g.reachCounts()
	weight := func(grp []int) int {
		w := 0
		for _, i := range grp {
			w = max(w, reach[i])
		}
		return w
	}
	// Members are sorted indices, so grp[0] is the group's first name.
	slices.SortFunc(groups, func(a, b []int) int {
		if c := cmp.Compare(weight(b), weight(a)); c != 0 {
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

// reachCounts returns, for every path, how many other paths of the closure
// reach it through one or more references.
//
// Nix closures are acyclic apart from self-references, but Group accepts
// any input, so this collapses strongly connected components (Tarjan) and
// propagates bit sets of descendants over the resulting DAG: O(n²/64)
// memory, a few MB for the largest closures seen in practice.
func (g *graph) reachCounts() []int {
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

	counts := make([]int, n)
	for i := range n {
		for w, word := range desc[comp[i]] {
			for word != 0 {
				j := w*64 + bits.TrailingZeros64(word)
				word &= word - 1
				if j != i {
					counts[j]++
				}
			}
		}
	}
	return counts
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

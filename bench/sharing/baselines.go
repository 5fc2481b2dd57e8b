package main

import (
	"cmp"
	"slices"
	"strings"

	"github.com/nixery/nixery/bench/pkgset"
)

// image is one image's closure, numbered: the shape every grouping here
// works on.
type image struct {
	names []string // store paths, sorted
	base  []string // names without hash, for popularity
	sizes []int64
	refs  [][]int // references within the closure, no self-references
	roots []int   // the requested packages' paths
}

func newImage(paths []*pkgset.Path, roots []string) *image {
	im := &image{}
	idx := map[string]int{}
	for i, p := range paths {
		idx[p.Path] = i
		im.names = append(im.names, p.Path)
		im.base = append(im.base, p.Name)
		im.sizes = append(im.sizes, p.Size)
	}
	im.refs = make([][]int, len(paths))
	for i, p := range paths {
		for _, r := range p.Refs {
			if j, ok := idx[r]; ok && j != i {
				im.refs[i] = append(im.refs[i], j)
			}
		}
		slices.Sort(im.refs[i])
		im.refs[i] = slices.Compact(im.refs[i])
	}
	for _, r := range roots {
		im.roots = append(im.roots, idx[r])
	}
	slices.Sort(im.roots)
	im.roots = slices.Compact(im.roots)
	return im
}

// desc returns, for every path, the set of paths it reaches (itself
// included). The generated graphs are acyclic.
func (im *image) desc() [][]bool {
	n := len(im.names)
	out := make([][]bool, n)
	var visit func(i int)
	visit = func(i int) {
		if out[i] != nil {
			return
		}
		set := make([]bool, n)
		set[i] = true
		for _, j := range im.refs[i] {
			visit(j)
			for k, ok := range out[j] {
				if ok {
					set[k] = true
				}
			}
		}
		out[i] = set
	}
	for i := range n {
		visit(i)
	}
	return out
}

func (im *image) groupNames(groups [][]int) [][]string {
	out := make([][]string, len(groups))
	for i, g := range groups {
		for _, j := range g {
			out[i] = append(out[i], im.names[j])
		}
		slices.Sort(out[i])
	}
	return out
}

// previousGroups is layers.GroupWith before it grouped root by root (and
// so layers.Group before it, with pop nil): units by private attachment
// (with popularity data, a path the table says at most one store path
// refers to, with one referrer in the closure, joins that referrer's unit);
// every unit its own layer when they fit, else the budget-1 largest units
// alone and the rest together.
func previousGroups(im *image, budget int, pop map[string]int) [][]string {
	n := len(im.names)
	parent := make([]int, n)
	for i := range parent {
		parent[i] = i
	}
	if pop != nil {
		referrers := make([][]int, n)
		for i, refs := range im.refs {
			for _, j := range refs {
				referrers[j] = append(referrers[j], i)
			}
		}
		for d := range n {
			if p, ok := pop[im.base[d]]; ok && p <= 1 && len(referrers[d]) == 1 {
				parent[d] = referrers[d][0]
			}
		}
	}
	byTop := map[int]int{}
	var units [][]int
	for i := range n {
		j := i
		for steps := 0; parent[j] != j && steps <= n; steps++ {
			j = parent[j]
		}
		if k, ok := byTop[j]; ok {
			units[k] = append(units[k], i)
		} else {
			byTop[j] = len(units)
			units = append(units, []int{i})
		}
	}
	if len(units) <= budget {
		return im.groupNames(units)
	}
	size := func(u []int) int64 {
		var s int64
		for _, i := range u {
			s += im.sizes[i]
		}
		return s
	}
	slices.SortStableFunc(units, func(a, b []int) int { return cmp.Compare(size(b), size(a)) })
	var rest []int
	for _, u := range units[budget-1:] {
		rest = append(rest, u...)
	}
	return im.groupNames(append(units[:budget-1:budget-1], rest))
}

// nixeryGroups follows the original Nixery (builder/layers.go, 2019–2025):
// a root node refers to the requested packages and to every "big or
// popular" path (closure size above 100 MB, or popularity at or above the
// threshold); the paths immediately dominated by the root, with everything
// they dominate, are the layers; over budget, layers are merged in
// ascending order of merge rating (root popularity × layer size), the two
// lowest first, until they fit. pop may be nil (no popularity data: every
// path counts 1, as Nixery does for paths missing from its table).
func nixeryGroups(im *image, budget int, pop map[string]int, threshold int) [][]string {
	n := len(im.names)
	desc := im.desc()
	popOf := func(i int) int {
		if p, ok := pop[im.base[i]]; ok {
			return p
		}
		return 1
	}
	// Node n is the root.
	succ := make([][]int, n+1)
	for i := range n {
		succ[i] = im.refs[i]
	}
	rootEdges := slices.Clone(im.roots)
	for i := range n {
		var closure int64
		for j, ok := range desc[i] {
			if ok {
				closure += im.sizes[j]
			}
		}
		if closure > 100*1000000 || (pop != nil && popOf(i) >= threshold) {
			rootEdges = append(rootEdges, i)
		}
	}
	slices.Sort(rootEdges)
	succ[n] = slices.Compact(rootEdges)
	idom := dominators(succ, n)

	children := make([][]int, n+1)
	for i := range n {
		if idom[i] >= 0 {
			children[idom[i]] = append(children[idom[i]], i)
		}
	}
	type layer struct {
		members []int
		rating  float64
	}
	var layers []layer
	for _, top := range children[n] {
		l := layer{members: []int{top}}
		var size int64
		for k := 0; k < len(l.members); k++ {
			size += im.sizes[l.members[k]]
			l.members = append(l.members, children[l.members[k]]...)
		}
		l.rating = float64(popOf(top)) * float64(size)
		layers = append(layers, l)
	}
	// Paths the root does not reach (none when the roots are right) join
	// the first layer, so that the result stays a partition.
	for i := range n {
		if idom[i] < 0 {
			layers = append(layers, layer{members: []int{i}})
		}
	}
	slices.SortStableFunc(layers, func(a, b layer) int { return cmp.Compare(a.rating, b.rating) })
	for len(layers) > budget {
		layers[1] = layer{members: append(layers[0].members, layers[1].members...), rating: layers[0].rating + layers[1].rating}
		layers = layers[1:]
	}
	groups := make([][]int, len(layers))
	for i, l := range layers {
		groups[i] = l.members
	}
	return im.groupNames(groups)
}

// popularityThreshold is the count that only the top 1% of the table
// reach: the original used 1000 for nixpkgs, "roughly the minimum number of
// references that only 1% of packages in the entire package set have".
func popularityThreshold(pop map[string]int) int {
	var counts []int
	for _, c := range pop {
		counts = append(counts, c)
	}
	slices.Sort(counts)
	slices.Reverse(counts)
	return counts[max(0, len(counts)/100-1)]
}

// dominators computes immediate dominators from root with the iterative
// algorithm of Cooper, Harvey and Kennedy; -1 for the root and for nodes
// it does not reach.
func dominators(succ [][]int, root int) []int {
	n := len(succ)
	order := make([]int, 0, n) // reverse postorder
	seen := make([]bool, n)
	var dfs func(v int)
	dfs = func(v int) {
		seen[v] = true
		for _, w := range succ[v] {
			if !seen[w] {
				dfs(w)
			}
		}
		order = append(order, v)
	}
	dfs(root)
	slices.Reverse(order)
	rpo := make([]int, n)
	for i := range rpo {
		rpo[i] = -1
	}
	for i, v := range order {
		rpo[v] = i
	}
	preds := make([][]int, n)
	for v := range n {
		for _, w := range succ[v] {
			preds[w] = append(preds[w], v)
		}
	}
	idom := make([]int, n)
	for i := range idom {
		idom[i] = -1
	}
	idom[root] = root
	intersect := func(a, b int) int {
		for a != b {
			for rpo[a] > rpo[b] {
				a = idom[a]
			}
			for rpo[b] > rpo[a] {
				b = idom[b]
			}
		}
		return a
	}
	for changed := true; changed; {
		changed = false
		for _, v := range order[1:] {
			nd := -1
			for _, p := range preds[v] {
				if rpo[p] < 0 || idom[p] < 0 {
					continue
				}
				if nd < 0 {
					nd = p
				} else {
					nd = intersect(p, nd)
				}
			}
			if nd != idom[v] {
				idom[v], changed = nd, true
			}
		}
	}
	idom[root] = -1
	return idom
}

// autoLayerGroups follows nixpkgs' auto-layer.py: paths are taken largest
// first as the primary path of a new layer; every path is labelled with the
// set of primaries that depend on it (a primary's dependencies drop the
// primaries above it), paths with the same label form a layer, and the
// last primary that keeps the layer count within the limit wins.
func autoLayerGroups(im *image, budget int) [][]string {
	n := len(im.names)
	desc := im.desc()
	bySize := make([]int, n)
	for i := range bySize {
		bySize[i] = i
	}
	slices.SortStableFunc(bySize, func(a, b int) int { return cmp.Compare(im.sizes[b], im.sizes[a]) })

	split := make([][]int, n) // path → sorted primaries labelling it
	count := func(s [][]int) int {
		keys := map[string]bool{}
		for _, l := range s {
			keys[key(l)] = true
		}
		return len(keys)
	}
	for _, p := range bySize {
		next := make([][]int, n)
		copy(next, split)
		next[p] = []int{p}
		for d := range n {
			if d == p || !desc[p][d] {
				continue
			}
			// Drop the users (ancestors) of p; add p unless the label
			// already holds one of p's dependencies.
			var l []int
			hasDep := false
			for _, q := range split[d] {
				if desc[q][p] && q != p {
					continue
				}
				l = append(l, q)
				if desc[p][q] {
					hasDep = true
				}
			}
			if !hasDep {
				l = append(l, p)
				slices.Sort(l)
			}
			next[d] = l
		}
		if count(next) > budget {
			break
		}
		split = next
	}
	byKey := map[string][]int{}
	var keys []string
	for i, l := range split {
		k := key(l)
		if _, ok := byKey[k]; !ok {
			keys = append(keys, k)
		}
		byKey[k] = append(byKey[k], i)
	}
	var groups [][]int
	for _, k := range keys {
		groups = append(groups, byKey[k])
	}
	return im.groupNames(groups)
}

func key(l []int) string {
	var b strings.Builder
	for _, x := range l {
		b.WriteString(string(rune(x + 1)))
	}
	return b.String()
}

package web

import (
	"cmp"
	"fmt"
	"math"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/nixery/nixery/internal/builder"
	"github.com/nixery/nixery/internal/treemap"
)

// Picture is the image page's picture of a closure: a treemap of its
// store paths, areas by NAR bytes, grouped and coloured by layer, drawn
// by the server as SVG (templates/picture.html). Each tile names its
// store path (a <title>, and a label where it fits); pointing at it or
// focusing it (it is a link, so Tab reaches it) shows its details in the
// band below the map: size, layer, licence and why it is there. A thin
// stripe at a tile's foot has the colour of the one requested package
// that pulls it in; paths that several pull in have none.
//
// It is bounded whatever the closure: at most maxTiles tiles of their
// own; the other paths (and any too small to see) are folded into one
// "N small paths" tile per layer; at most maxLayers layers are drawn, and
// a layer too small to see is left blank.
type Picture struct {
	W, H     int // the map, in SVG units; the details band is below it
	Layers   []PictureLayer
	Tiles    []Tile
	Packages []PackageShare // the requested packages, in request order
	Total    int64          // NAR bytes of the paths in the layers
	Shared   int64          // of them, pulled in by several requested packages (or none)
	Folded   int            // paths in "N small paths" tiles
	// Hidden paths are those of the HiddenLayers layers too small to
	// draw (or beyond maxLayers), left blank.
	Hidden, HiddenLayers int
}

// PictureLayer is one layer's outline in the picture.
type PictureLayer struct {
	Index        int // in the manifest
	X, Y, W, H   float64
	Size         int64 // NAR bytes of its paths
	Paths        int
	Fill, Stroke string
}

// Tile is one store path in the picture, or the small paths of a layer.
type Tile struct {
	ID         string // its id and fragment: "tile-<n>"
	Name       string // the store path, or "N small paths"
	Short      string // the store path without /nix/store/ and its hash
	Label      string // what is drawn in it ("" if nothing fits)
	X, Y, W, H float64
	Size       int64
	Layer      int
	Fill       string
	Owner      int    // index in Picture.Packages of the one package that pulls it in; -1 if none or several
	Stripe     string // the owner's colour
	Licence    string // of a requested package's output; "" if none is known
	Why        []string
	Small      int // paths this tile stands for, if it is a layer's small paths
}

// PackageShare is a requested package and the bytes that only it pulls
// into the image.
type PackageShare struct {
	Name   string
	Own    int64
	Paths  int // store paths only it pulls in
	Colour string
}

const (
	pictureW = 960
	pictureH = 420
	// maxTiles bounds the tiles of their own; minTileArea (SVG units²)
	// folds the paths too small to see or point at.
	maxTiles    = 300
	maxLayers   = 150
	minTileArea = 80.0
)

// shortName is a store path without the store directory and the hash:
// "/nix/store/<hash>-hello-2.12.1" is "hello-2.12.1".
func shortName(p string) string {
	base := path.Base(p)
	if i := strings.IndexByte(base, '-'); i == 32 {
		return base[i+1:]
	}
	return base
}

// requested returns the requested packages of d and each one's store
// paths: its outputs per the package meta or, for details stored before
// it, each root a package of its own.
func requested(d *builder.Details) (names []string, outputs [][]string) {
	for _, p := range d.PackageMeta {
		names, outputs = append(names, p.Name), append(outputs, p.Outputs)
	}
	if len(names) == 0 {
		for _, r := range d.Roots {
			names, outputs = append(names, shortName(r)), append(outputs, []string{r})
		}
	}
	return names, outputs
}

// whyChains finds, for every path reachable from roots through the
// references, the shortest chain of references that pulls it in: a
// breadth-first search from all the roots at once (in order, each path's
// references in sorted order, so the answer is the same every time). It
// returns each path's predecessor on that chain ("" for a root); a path
// absent from the map is reachable from no root.
func whyChains(refs map[string][]string, roots []string) map[string]string {
	from := map[string]string{}
	var queue []string
	for _, r := range roots {
		if _, seen := from[r]; !seen {
			from[r] = ""
			queue = append(queue, r)
		}
	}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, q := range refs[p] {
			if _, seen := from[q]; !seen {
				from[q] = p
				queue = append(queue, q)
			}
		}
	}
	return from
}

// chain is the chain of whyChains' from that ends at p, root first; nil if
// no root reaches p.
func chain(from map[string]string, p string) []string {
	if _, ok := from[p]; !ok {
		return nil
	}
	var out []string
	for ; p != ""; p = from[p] {
		out = append(out, p)
		if len(out) > len(from) {
			break // a cycle cannot happen (one predecessor each); this bounds it anyway
		}
	}
	slices.Reverse(out)
	return out
}

// reachable is the set of paths reachable from roots.
func reachable(refs map[string][]string, roots []string) map[string]bool {
	seen := map[string]bool{}
	stack := slices.Clone(roots)
	for len(stack) > 0 {
		p := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[p] {
			continue
		}
		seen[p] = true
		stack = append(stack, refs[p]...)
	}
	return seen
}

// licences is the licence of each requested package's outputs, as its
// meta names them ("MIT, GPL-2.0-or-later").
func licences(d *builder.Details) map[string]string {
	out := map[string]string{}
	for _, p := range d.PackageMeta {
		var names []string
		for _, l := range p.Licenses {
			names = append(names, cmp.Or(l.SPDXID, l.ShortName, l.FullName))
		}
		for _, o := range p.Outputs {
			if len(names) > 0 {
				out[o] = strings.Join(names, ", ")
			}
		}
	}
	return out
}

// picture draws d's closure; nil if there is nothing to draw.
func picture(d *builder.Details) *Picture {
	size := make(map[string]int64, len(d.Closure))
	refs := make(map[string][]string, len(d.Closure))
	for _, p := range d.Closure {
		size[p.Path], refs[p.Path] = p.Size, p.References
	}
	pic := &Picture{W: pictureW, H: pictureH}

	// Who pulls what in.
	names, outputs := requested(d)
	owner := map[string]int{}
	for k, outs := range outputs {
		for p := range reachable(refs, outs) {
			if o, seen := owner[p]; !seen {
				owner[p] = k
			} else if o != k {
				owner[p] = -1
			}
		}
	}
	var roots []string
	for k, name := range names {
		pic.Packages = append(pic.Packages, PackageShare{Name: name, Colour: fmt.Sprintf("hsl(%d,70%%,32%%)", (k*97+200)%360)})
		roots = append(roots, outputs[k]...)
	}
	from := whyChains(refs, roots)
	lic := licences(d)

	// The paths of each layer, and which get tiles of their own: the
	// biggest maxTiles that are big enough to see.
	type item struct {
		path  string
		layer int
	}
	var all []item
	for i, l := range d.Layers {
		for _, p := range l.Paths {
			if s, ok := size[p]; ok && s > 0 {
				all = append(all, item{p, i})
				pic.Total += s
			}
		}
	}
	if pic.Total == 0 {
		return nil
	}
	slices.SortStableFunc(all, func(a, b item) int { return cmp.Compare(size[b.path], size[a.path]) })
	perUnit := float64(pic.W*pic.H) / float64(pic.Total)
	own := map[string]bool{}
	for i, it := range all {
		if i < maxTiles && float64(size[it.path])*perUnit >= minTileArea {
			own[it.path] = true
		}
		if o, ok := owner[it.path]; ok && o >= 0 {
			pic.Packages[o].Own += size[it.path]
			pic.Packages[o].Paths++
		} else {
			pic.Shared += size[it.path]
		}
	}

	// Layers first, then the tiles inside each.
	var layerSizes []float64
	var layerIdx []int
	var layerPaths [][]string
	var small [][]string
	for i, l := range d.Layers {
		var mine, tiny []string
		var sum int64
		for _, p := range l.Paths {
			if s := size[p]; s > 0 {
				sum += s
				if own[p] {
					mine = append(mine, p)
				} else {
					tiny = append(tiny, p)
				}
			}
		}
		if sum == 0 {
			continue
		}
		layerSizes = append(layerSizes, float64(sum))
		layerIdx = append(layerIdx, i)
		layerPaths = append(layerPaths, mine)
		small = append(small, tiny)
	}
	boxes := treemap.Squarify(layerSizes, treemap.Rect{W: float64(pic.W), H: float64(pic.H)})
	// The biggest maxLayers layers big enough to see are drawn.
	byArea := make([]int, len(boxes))
	for k := range byArea {
		byArea[k] = k
	}
	slices.SortStableFunc(byArea, func(a, b int) int { return cmp.Compare(layerSizes[b], layerSizes[a]) })
	drawn := make([]bool, len(boxes))
	for rank, k := range byArea {
		drawn[k] = rank < maxLayers && boxes[k].Area() >= minTileArea
	}
	for k, box := range boxes {
		i := layerIdx[k]
		if !drawn[k] {
			pic.Hidden += len(layerPaths[k]) + len(small[k])
			pic.HiddenLayers++
			continue
		}
		hue := (i * 47) % 360
		pl := PictureLayer{Index: i, X: box.X, Y: box.Y, W: box.W, H: box.H, Size: int64(layerSizes[k]),
			Paths: len(layerPaths[k]) + len(small[k]), Fill: fmt.Sprintf("hsl(%d,55%%,80%%)", hue), Stroke: fmt.Sprintf("hsl(%d,45%%,30%%)", hue)}
		pic.Layers = append(pic.Layers, pl)
		pad := min(1, box.W/4, box.H/4)
		inner := treemap.Rect{X: box.X + pad, Y: box.Y + pad, W: box.W - 2*pad, H: box.H - 2*pad}
		var sizes []float64
		for _, p := range layerPaths[k] {
			sizes = append(sizes, float64(size[p]))
		}
		var smallSum int64
		for _, p := range small[k] {
			smallSum += size[p]
		}
		if len(small[k]) > 0 {
			sizes = append(sizes, float64(smallSum))
		}
		for j, r := range treemap.Squarify(sizes, inner) {
			t := Tile{ID: fmt.Sprintf("tile-%d", len(pic.Tiles)), X: r.X, Y: r.Y, W: r.W, H: r.H, Layer: i, Owner: -1,
				Fill: fmt.Sprintf("hsl(%d,55%%,%d%%)", hue, 72+(j%3)*5)}
			if j < len(layerPaths[k]) {
				p := layerPaths[k][j]
				t.Name, t.Short, t.Size, t.Licence = p, shortName(p), size[p], lic[p]
				if o, ok := owner[p]; ok && o >= 0 {
					t.Owner, t.Stripe = o, pic.Packages[o].Colour
				}
				for _, q := range chain(from, p) {
					t.Why = append(t.Why, shortName(q))
				}
			} else {
				t.Small, t.Size = len(small[k]), smallSum
				t.Name = fmt.Sprintf("%d small paths", t.Small)
				t.Short = t.Name
				pic.Folded += t.Small
			}
			t.Label = label(t.Short, r)
			pic.Tiles = append(pic.Tiles, t)
		}
	}
	return pic
}

// label is the text that fits in r (11-unit type, about 6.2 units a
// character): name, cut with "…" if need be, or nothing.
func label(name string, r treemap.Rect) string {
	const charW, lineH = 6.2, 14
	if r.H < lineH {
		return ""
	}
	fit := int((r.W - 6) / charW)
	runes := []rune(name)
	switch {
	case fit >= len(runes):
		return name
	case fit >= 4:
		return string(runes[:fit-1]) + "…"
	}
	return ""
}

// maxWhy is how many store paths the details show of a chain: the first
// two and the last ones, the middle cut.
const maxWhy = 7

// WhyText is the chain of t for people: "git → curl → openssl", the middle
// of a long one cut.
func (t Tile) WhyText() string {
	w := t.Why
	if len(w) > maxWhy {
		w = append(append(slices.Clone(w[:2]), fmt.Sprintf("… %d more …", len(w)-maxWhy+1)), w[len(w)-maxWhy+3:]...)
	}
	return strings.Join(w, " → ")
}

// svgNumber writes a coordinate with one decimal at most: enough for a
// picture 960 units wide, and short.
func svgNumber(v any) string {
	return strconv.FormatFloat(math.Round(toFloat(v)*10)/10, 'f', -1, 64)
}

func toFloat(v any) float64 {
	switch n := v.(type) {
	case float64:
		return n
	case int:
		return float64(n)
	case int64:
		return float64(n)
	}
	return 0
}

// ratio is a/b, 0 when b is.
func ratio(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// count is "1 layer", "2 layers".
func count(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return strconv.Itoa(n) + " " + thing + "s"
}

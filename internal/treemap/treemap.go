// Package treemap lays out sizes as rectangles whose areas are
// proportional to them: the squarified treemap of Bruls, Huizing and van
// Wijk ("Squarified Treemaps", 2000,
// https://www.win.tue.nl/~vanwijk/stm.pdf), which keeps rectangles close
// to squares so that each can hold a label. It is pure arithmetic; the
// web's image page draws its picture of a closure with it.
//
// The algorithm, biggest size first: items are added to a row along the
// shorter side of the space left while that does not make the row's
// worst aspect ratio worse; then the row is fixed as a strip of that
// side, and the next row starts in the rest. For sizes 6, 6, 4, 3, 2, 2,
// 1 in a 6×4 rectangle the first row is 6 and 6 (a 3×4 strip on the
// left, two 3×2 boxes); the next rows fill the 3×4 left over.
package treemap

import (
	"cmp"
	"slices"
)

// Rect is an axis-aligned rectangle: its top left corner and its size.
type Rect struct{ X, Y, W, H float64 }

// Area is W×H.
func (r Rect) Area() float64 { return r.W * r.H }

// Squarify lays out sizes in r and returns one rectangle per size, in the
// order given; together they tile r, and each one's area is its share of
// the total. Sizes of 0 or less get an empty rectangle at r's corner. The
// order of the layout (biggest first, equal sizes in the order given) does
// not depend on the order of sizes.
func Squarify(sizes []float64, r Rect) []Rect {
	out := make([]Rect, len(sizes))
	var order []int
	var total float64
	for i, s := range sizes {
		out[i] = Rect{X: r.X, Y: r.Y}
		if s > 0 {
			order = append(order, i)
			total += s
		}
	}
	if total == 0 || r.W <= 0 || r.H <= 0 {
		return out
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(sizes[b], sizes[a]) })
	scale := r.Area() / total
	area := func(i int) float64 { return sizes[i] * scale }
	for start := 0; start < len(order); {
		side := min(r.W, r.H)
		end, sum := start+1, area(order[start])
		for end < len(order) {
			next := sum + area(order[end])
			if worst(next, area(order[start]), area(order[end]), side) > worst(sum, area(order[start]), area(order[end-1]), side) {
				break
			}
			sum = next
			end++
		}
		if end == len(order) {
			sum = r.Area() // the last row takes what is left, rounding and all
		}
		r = place(out, order[start:end], area, sum, r)
		start = end
	}
	return out
}

// worst is the worst aspect ratio of a row of total area sum, whose
// biggest item has area big and smallest small, laid along a side of
// length side.
func worst(sum, big, small, side float64) float64 {
	s2, w2 := sum*sum, side*side
	return max(w2*big/s2, s2/(w2*small))
}

// place fixes the row of items (areas summing to sum) as a strip along
// the shorter side of r and returns the rest of r. A column on the left
// of a wide r is a row along the top of r transposed.
func place(out []Rect, row []int, area func(int) float64, sum float64, r Rect) Rect {
	column := r.W >= r.H
	if column {
		r = r.transposed()
	}
	// A row along the top, items left to right.
	thick := sum / r.W
	x := r.X
	for k, i := range row {
		w := area(i) / thick
		if k == len(row)-1 {
			w = r.X + r.W - x
		}
		out[i] = Rect{X: x, Y: r.Y, W: w, H: thick}
		if column {
			out[i] = out[i].transposed()
		}
		x += w
	}
	rest := Rect{X: r.X, Y: r.Y + thick, W: r.W, H: max(r.H-thick, 0)}
	if column {
		rest = rest.transposed()
	}
	return rest
}

// transposed is r mirrored on the diagonal: x for y, width for height.
func (r Rect) transposed() Rect { return Rect{X: r.Y, Y: r.X, W: r.H, H: r.W} }

package treemap

import (
	"math"
	"math/rand/v2"
	"testing"
)

const eps = 1e-6

// check asserts the properties of a layout: one rectangle per size, each
// inside r, areas proportional to sizes, no two overlapping, and all of r
// covered when any size is positive.
func check(t *testing.T, sizes []float64, r Rect, got []Rect) {
	t.Helper()
	if len(got) != len(sizes) {
		t.Fatalf("%d rectangles for %d sizes", len(got), len(sizes))
	}
	var total float64
	for _, s := range sizes {
		total += max(s, 0)
	}
	var covered float64
	for i, g := range got {
		if g.X < r.X-eps || g.Y < r.Y-eps || g.X+g.W > r.X+r.W+eps || g.Y+g.H > r.Y+r.H+eps || g.W < -eps || g.H < -eps {
			t.Errorf("size %v: %+v outside %+v", sizes[i], g, r)
		}
		want := 0.0
		if sizes[i] > 0 {
			want = sizes[i] / total * r.Area()
		}
		if math.Abs(g.Area()-want) > 1e-6*r.Area() {
			t.Errorf("size %v: area %v, want %v", sizes[i], g.Area(), want)
		}
		covered += g.Area()
		for j := range i {
			h := got[j]
			ox := min(g.X+g.W, h.X+h.W) - max(g.X, h.X)
			oy := min(g.Y+g.H, h.Y+h.H) - max(g.Y, h.Y)
			if ox > eps && oy > eps {
				t.Errorf("%+v (size %v) overlaps %+v (size %v)", g, sizes[i], h, sizes[j])
			}
		}
	}
	if total > 0 && math.Abs(covered-r.Area()) > 1e-6*r.Area() {
		t.Errorf("covered %v of %v", covered, r.Area())
	}
}

func TestSquarify(t *testing.T) {
	for _, tt := range []struct {
		name  string
		sizes []float64
		r     Rect
	}{
		{"the paper's example", []float64{6, 6, 4, 3, 2, 2, 1}, Rect{0, 0, 6, 4}},
		{"one", []float64{5}, Rect{10, 20, 30, 40}},
		{"none", nil, Rect{0, 0, 1, 1}},
		{"zeros and negatives", []float64{0, 3, -1, 1}, Rect{0, 0, 10, 10}},
		{"all zero", []float64{0, 0}, Rect{0, 0, 10, 10}},
		{"unsorted, tall", []float64{1, 50, 2, 7, 7, 300, 1}, Rect{5, 5, 100, 700}},
		{"one huge, many tiny", append([]float64{1e9}, make([]float64, 50)...), Rect{0, 0, 960, 400}},
	} {
		t.Run(tt.name, func(t *testing.T) { check(t, tt.sizes, tt.r, Squarify(tt.sizes, tt.r)) })
	}
	// The paper's example: the first row is the two sixes, a 3×4 strip.
	got := Squarify([]float64{6, 6, 4, 3, 2, 2, 1}, Rect{0, 0, 6, 4})
	if got[0] != (Rect{0, 0, 3, 2}) || got[1] != (Rect{0, 2, 3, 2}) {
		t.Errorf("first row %+v %+v, want the 3×4 strip on the left", got[0], got[1])
	}
}

// Random closures of up to 300 paths: the properties hold.
func TestSquarifyRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		n := 1 + rng.IntN(300)
		sizes := make([]float64, n)
		for i := range sizes {
			sizes[i] = math.Exp(rng.Float64() * 12) // 1 B to 160 kB, like store paths
		}
		r := Rect{0, 0, 100 + rng.Float64()*900, 100 + rng.Float64()*900}
		got := Squarify(sizes, r)
		check(t, sizes, r, got)
		if t.Failed() {
			t.Fatalf("round %d", round)
		}
	}
}

func TestSquarifyOrderFree(t *testing.T) {
	a := Squarify([]float64{1, 2, 3}, Rect{0, 0, 10, 10})
	b := Squarify([]float64{3, 2, 1}, Rect{0, 0, 10, 10})
	if a[0] != b[2] || a[1] != b[1] || a[2] != b[0] {
		t.Errorf("layout depends on the order: %v vs %v", a, b)
	}
}

func BenchmarkSquarify(b *testing.B) {
	sizes := make([]float64, 5000)
	for i := range sizes {
		sizes[i] = float64(i%97 + 1)
	}
	for b.Loop() {
		Squarify(sizes, Rect{0, 0, 960, 600})
	}
}

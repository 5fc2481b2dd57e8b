package pkgset

import (
	"crypto/sha256"
	"fmt"
	"maps"
	"slices"
	"testing"
)

// TestGenerateIsStable pins the generated set of seed 1: the figures of
// bench/sharing (docs/layering.md) and bench/workload
// (docs/measurements.md) were measured on exactly this set, so a change
// to the generator must show here, on purpose.
func TestGenerateIsStable(t *testing.T) {
	s := Generate(1)
	if got, want := digestOf(s), "38bdaec2322a59700fbc76b105ecb74cd7704378549113fb4414b7701a7b4224"; got != want {
		t.Errorf("seed 1 generates a different set: digest %s, want %s", got, want)
	}
	if got := len(s.Paths); got != 1082 {
		t.Errorf("%d store paths, want 1082", got)
	}
}

// TestWorkloadClosures checks that every image of the workload resolves
// and that together they need 249 distinct store paths (1,590,958,451
// NAR bytes), the figures docs/layering.md quotes.
func TestWorkloadClosures(t *testing.T) {
	s := Generate(1)
	distinct := map[string]int64{}
	for _, name := range Workload {
		c, err := s.Closure(Packages(name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, p := range c {
			distinct[p.Path] = p.Size
		}
	}
	var total int64
	for _, size := range distinct {
		total += size
	}
	if len(distinct) != 249 || total != 1590958451 {
		t.Errorf("workload: %d distinct paths, %d bytes; want 249, 1590958451", len(distinct), total)
	}
}

func TestPackages(t *testing.T) {
	for _, tc := range []struct {
		name string
		want []string
	}{
		{"git", []string{"git"}},
		{"shell/git", []string{"bashInteractive", "coreutils", "moreutils", "nano", "git"}},
		{"python3Packages.requests/python3Packages.flask", []string{"python3Packages.requests", "python3Packages.flask"}},
	} {
		if got := Packages(tc.name); !slices.Equal(got, tc.want) {
			t.Errorf("Packages(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestStacksShape pins the second shape of seed 1 as TestGenerateIsStable
// pins the first, and checks that the workload resolves in it and that
// the generated part differs from Tower's.
func TestStacksShape(t *testing.T) {
	s := GenerateShape(1, Stacks)
	if got, want := digestOf(s), "766b4a882923da2c47bb775d8a744b2cb5481927e1b966833946f0611f4676df"; got != want {
		t.Errorf("seed 1, shape stacks generates a different set: digest %s, want %s", got, want)
	}
	if got := len(s.Paths); got != 1547 {
		t.Errorf("%d store paths, want 1547", got)
	}
	for _, name := range Workload {
		if _, err := s.Closure(Packages(name)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, ok := s.Paths["gui-lib00-1.0"]; ok {
		t.Errorf("shape stacks has the tower's libraries")
	}
	if Shapes["stacks"] != Stacks || Shapes["tower"] != Tower {
		t.Errorf("Shapes = %v", Shapes)
	}
}

// digestOf hashes every path of s (name, store path, size, references) in
// name order.
func digestOf(s *Set) string {
	h := sha256.New()
	for _, n := range slices.Sorted(maps.Keys(s.Paths)) {
		p := s.Paths[n]
		fmt.Fprintln(h, p.Name, p.Path, p.Size, p.Refs)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

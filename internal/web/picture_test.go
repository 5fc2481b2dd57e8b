package web

import (
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/nixery/nixery/internal/builder"
	"github.com/nixery/nixery/internal/image"
	"github.com/nixery/nixery/internal/metadata"
	"github.com/nixery/nixery/internal/nix"
)

// storePath is a store path of the given name with a made-up hash.
func storePath(name string) string {
	return "/nix/store/" + fmt.Sprintf("%032d", len(name))[:32] + "-" + name
}

func TestWhyChains(t *testing.T) {
	// git → curl → openssl → libc; git → perl → libc; hello → libc;
	// zlib is referred to by nothing that a root reaches.
	refs := map[string][]string{
		"git":     {"curl", "perl"},
		"curl":    {"openssl"},
		"openssl": {"libc"},
		"perl":    {"libc"},
		"hello":   {"libc"},
		"orphan":  {"zlib"},
	}
	from := whyChains(refs, []string{"git", "hello"})
	for _, tt := range []struct {
		path string
		want []string
	}{
		{"git", []string{"git"}},
		{"openssl", []string{"git", "curl", "openssl"}},
		// Shortest: from hello, one step, not git's two or three.
		{"libc", []string{"hello", "libc"}},
		{"perl", []string{"git", "perl"}},
		{"zlib", nil},
		{"orphan", nil},
	} {
		if got := chain(from, tt.path); !slices.Equal(got, tt.want) {
			t.Errorf("why %s: %v, want %v", tt.path, got, tt.want)
		}
	}
	// A cycle (Nix allows a path to refer to one that refers back)
	// ends the search.
	from = whyChains(map[string][]string{"a": {"b"}, "b": {"a", "c"}}, []string{"a"})
	if got := chain(from, "c"); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("why c in a cycle: %v", got)
	}
	long := Tile{Why: []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"}}
	if got := long.WhyText(); got != "a → b → … 4 more … → g → h → i → j" {
		t.Errorf("a long chain reads %q", got)
	}
}

// synthetic is the details of an image of n store paths over three
// requested packages (the first two with licences), made up but shaped
// like one: sizes from a few bytes to megabytes, references to later
// paths, in at most 99 layers.
func synthetic(n int, seed uint64) *builder.Details {
	rng := rand.New(rand.NewPCG(seed, 7))
	d := &builder.Details{Name: "shell/git", Tag: "latest", Manifests: map[string]digest.Digest{}}
	paths := make([]string, n)
	for i := range paths {
		paths[i] = "/nix/store/" + fmt.Sprintf("%032x", rng.Uint64())[:32] + fmt.Sprintf("-pkg%d-1.%d", i, i%7)
	}
	for i, p := range paths {
		var refs []string
		for range rng.IntN(4) {
			if j := i + 1 + rng.IntN(n); j < n {
				refs = append(refs, paths[j])
			}
		}
		if i+1 < n && i < 3 {
			refs = append(refs, paths[i+1])
		}
		slices.Sort(refs)
		refs = slices.Compact(refs)
		size := int64(1 + rng.ExpFloat64()*2e6)
		d.Closure = append(d.Closure, builder.PathInfo{Path: p, Size: size, References: refs})
	}
	d.Roots = paths[:3]
	lic := []nix.License{{SPDXID: "GPL-2.0-or-later"}}
	d.PackageMeta = []metadata.PackageInfo{
		{Name: "git", Outputs: paths[:1], Meta: nix.Meta{Licenses: lic}},
		{Name: "bash<script>", Outputs: paths[1:2], Meta: nix.Meta{Licenses: []nix.License{{ShortName: "mit"}}}},
		{Name: "coreutils", Outputs: paths[2:3]},
	}
	// 99 layers at most, as the default budget gives, the first ones
	// the biggest paths alone (as popular, big paths are).
	layers := min(n, 99)
	for k := range layers {
		l := builder.LayerInfo{Digest: digest.FromString(fmt.Sprint(seed, k)), Size: int64(1000 + k)}
		l.Paths = paths[k*n/layers : (k+1)*n/layers]
		d.Layers = append(d.Layers, l)
	}
	d.Layers = append(d.Layers, builder.LayerInfo{Digest: digest.FromString("customisation"), Size: 500})
	return d
}

func TestPicture(t *testing.T) {
	for _, n := range []int{3, 5, 500, 5000} {
		d := synthetic(n, 1)
		pic := picture(d)
		var total int64
		for _, p := range d.Closure {
			total += p.Size
		}
		if pic.Total != total {
			t.Errorf("%d paths: total %d, want %d", n, pic.Total, total)
		}
		// Bounded: at most maxTiles tiles of their own, plus one small
		// tile per layer drawn; every path in a tile or a layer left
		// blank.
		own, folded := 0, 0
		for _, tile := range pic.Tiles {
			if tile.Small > 0 {
				folded += tile.Small
			} else {
				own++
			}
			if tile.X < 0 || tile.Y < 0 || tile.X+tile.W > float64(pic.W)+1e-6 || tile.Y+tile.H > float64(pic.H)+1e-6 {
				t.Errorf("%d paths: tile %s outside the map: %+v", n, tile.Name, tile)
			}
		}
		if own > maxTiles || own+folded+pic.Hidden != n || folded != pic.Folded || len(pic.Tiles) > maxTiles+maxLayers || len(pic.Layers) > maxLayers {
			t.Errorf("%d paths: %d own tiles, %d folded (%d said), %d hidden, %d tiles, %d layers; want ≤ %d own and %d paths", n, own, folded, pic.Folded, pic.Hidden, len(pic.Tiles), len(pic.Layers), maxTiles, n)
		}
		// Shares: what each package alone pulls in and what is shared
		// add up to the whole.
		shares := pic.Shared
		for _, p := range pic.Packages {
			shares += p.Own
		}
		if shares != total {
			t.Errorf("%d paths: shares add up to %d, want %d", n, shares, total)
		}
	}

	// The first tile of a small image: git itself, its licence, the
	// chain from it.
	d := synthetic(5, 1)
	pic := picture(d)
	i := slices.IndexFunc(pic.Tiles, func(t Tile) bool { return t.Name == d.Closure[0].Path })
	if i < 0 {
		t.Fatalf("no tile for git's output: %+v", pic.Tiles)
	}
	if g := pic.Tiles[i]; g.Licence != "GPL-2.0-or-later" || !slices.Equal(g.Why, []string{shortName(d.Closure[0].Path)}) {
		t.Errorf("git's tile: %+v", g)
	}
	if picture(&builder.Details{}) != nil {
		t.Error("a picture of nothing")
	}
}

func TestCompare(t *testing.T) {
	lay := func(name string, size int64, paths ...string) builder.LayerInfo {
		return builder.LayerInfo{Digest: digest.FromString(name), Size: size, Paths: paths}
	}
	libc, git, hello, bash := storePath("libc"), storePath("git"), storePath("hello"), storePath("bash")
	a := &builder.Details{Name: "git",
		Closure: []builder.PathInfo{{Path: libc, Size: 1000}, {Path: git, Size: 300}, {Path: bash, Size: 50}},
		Layers:  []builder.LayerInfo{lay("libc", 400, libc), lay("git+bash", 150, git, bash), lay("custom-git", 10)}}
	b := &builder.Details{Name: "hello",
		Closure: []builder.PathInfo{{Path: libc, Size: 1000}, {Path: hello, Size: 20}, {Path: bash, Size: 50}},
		Layers:  []builder.LayerInfo{lay("libc", 400, libc), lay("hello", 9, hello), lay("bash", 30, bash), lay("custom-hello", 10)}}
	c := compare(a, b)
	check := func(what string, got, want Count) {
		if got != want {
			t.Errorf("%s: %+v, want %+v", what, got, want)
		}
	}
	check("shared layers", c.Layers.Shared, Count{1, 400})
	check("git's layers", c.Layers.OnlyA, Count{2, 160})
	check("hello's layers", c.Layers.OnlyB, Count{3, 49})
	// bash is in both, in different layers: shared as a path.
	check("shared paths", c.Paths.Shared, Count{2, 1050})
	check("git's paths", c.Paths.OnlyA, Count{1, 300})
	check("hello's paths", c.Paths.OnlyB, Count{1, 20})
	if len(c.Paths.OnlyAList) != 1 || c.Paths.OnlyAList[0].Path != git {
		t.Errorf("git's own paths: %+v", c.Paths.OnlyAList)
	}
	// An image with itself shares everything.
	self := compare(a, a)
	check("self", self.Layers.OnlyA, Count{})
	check("self paths", self.Paths.Shared, Count{3, 1350})
}

// The image page of a built image shows the picture; hostile package
// names from the details stay escaped in it.
func TestPicturePage(t *testing.T) {
	s := &Site{Version: "test"}
	req, _ := image.ParseRef("shell/git")
	d := synthetic(40, 3)
	rec := httptest.NewRecorder()
	s.showImage(rec, httptest.NewRequest("GET", "/image/shell/git", nil), req, d, nil)
	body := rec.Body.String()
	for _, want := range []string{`<svg viewBox="0 0 960 486"`, `class="tile`, `tabindex="0"`, "licence: GPL-2.0-or-later", "why: pkg0-1.0",
		"bash&lt;script&gt;", `id="compare-form"`, "alone pulls in"} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if strings.Contains(body, "bash<script>") || strings.Contains(body, "ZgotmplZ") {
		t.Errorf("unescaped or filtered output in the page")
	}
}

// BenchmarkImagePage renders the image page of a 500-path closure (the
// figure in docs/measurements.md): the page's size is reported as
// bytes/page.
func BenchmarkImagePage(b *testing.B) {
	s := &Site{Version: "bench"}
	req, _ := image.ParseRef("shell/git")
	d := synthetic(500, 1)
	var size int
	for b.Loop() {
		rec := httptest.NewRecorder()
		s.showImage(rec, httptest.NewRequest("GET", "/image/shell/git", nil), req, d, nil)
		size = rec.Body.Len()
	}
	b.ReportMetric(float64(size), "bytes/page")
}

// ?compare= with a name that is no image name: 400, the name escaped,
// no build and no look-up.
func TestCompareHostileName(t *testing.T) {
	s := &Site{Version: "test"}
	req, _ := image.ParseRef("shell/git")
	rec := httptest.NewRecorder()
	s.showImage(rec, httptest.NewRequest("GET", "/image/shell/git?compare=%3Cscript%3Ealert(1)%3C/script%3E", nil), req, synthetic(10, 1), nil)
	body := rec.Body.String()
	if rec.Code != 400 || !strings.Contains(body, `id="compare-error"`) || strings.Contains(body, "<script>alert") || !strings.Contains(body, "&lt;script&gt;alert(1)") {
		t.Errorf("%d:\n%s", rec.Code, body)
	}
}

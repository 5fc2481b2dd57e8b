package search

import (
	"fmt"
	"math/bits"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nixery/nixery/internal/nix"
)

// realNames are real nixpkgs attribute paths, the ones the suggestion
// tests expect among the others.
var realNames = []string{
	"hello", "hello-wayland", "help2man", "helm", "python3", "python312", "python313",
	"python3Packages.requests", "python312Packages.requests", "python313Packages.requests",
	"python3Packages.requests-toolbelt", "haskellPackages.req", "_1password-cli", "_1password-gui",
	"nodejs", "nodejs_20", "nodejs_22", "xorg.xev", "xorg.xauth", "git", "gitFull", "bashInteractive",
	"coreutils", "jq", "ripgrep", "fd", "FooBar", "fooBar",
}

func suggestIndex(names []string) *index {
	pkgs := make([]nix.Package, len(names))
	for i, n := range names {
		pkgs[i] = nix.Package{Attr: n}
	}
	return newIndex("test", "", pkgs)
}

func TestSuggest(t *testing.T) {
	small := suggestIndex(realNames)
	big := suggestIndex(generatedNames(120000))
	for _, tt := range []struct {
		why, name string
		want      []string
	}{
		{"typo: a letter left out", "helo", []string{"hello", "helm"}},
		{"typo: two letters swapped", "pyhton3", []string{"python3"}},
		{"typo: an underscore left out", "nodejs22", []string{"nodejs_22", "nodejs_20", "nodejs"}},
		{"case", "Hello", []string{"hello"}},
		{"case, nested", "PYTHON3PACKAGES.REQUESTS",
			[]string{"python3packages.requests", "python312packages.requests", "python313packages.requests"}},
		{"nested: the last component", "requests",
			[]string{"python3packages.requests", "python312packages.requests", "python313packages.requests"}},
		{"nested, with a typo", "requets",
			[]string{"python3packages.requests", "python312packages.requests", "python313packages.requests"}},
		{"nested set member", "xev", []string{"xorg.xev"}},
		{"leading underscore", "1password-cli", []string{"_1password-cli", "_1password-gui"}},
		{"nothing close", "qwertyuiop", nil},
		{"nothing close, short", "zzzzzz", nil},
		{"too short for a typo", "gti", nil},
		{"the name itself is no suggestion", "ripgrep", nil},
		{"ambiguous ignoring case: not suggested", "foobar", nil},
		{"empty", "", nil},
	} {
		for _, x := range []*index{small, big} {
			if got := x.suggest.suggest(tt.name); !slices.Equal(got, tt.want) {
				t.Errorf("%s: suggest(%q) over %d names = %q, want %q", tt.why, tt.name, len(x.attrs), got, tt.want)
			}
		}
	}
}

// A hostile name (long, or of characters no attribute has) costs little
// and gets a short answer.
func TestSuggestHostile(t *testing.T) {
	x := suggestIndex(generatedNames(120000))
	for _, name := range []string{
		strings.Repeat("a", 1<<20),
		strings.Repeat("ä", maxSuggestName/2),
		strings.Repeat("x", maxSuggestName),
		strings.Repeat("python3packages.", 8),
		"\x00\xff\xfe" + strings.Repeat("\u202e", 20),
		strings.Repeat("ĥéłło", 6),
	} {
		start := time.Now()
		got := x.suggest.suggest(name)
		took := time.Since(start)
		if len(got) > MaxSuggestions {
			t.Errorf("%.20q…: %d suggestions", name, len(got))
		}
		for _, s := range got {
			if len(s) > maxSuggested || !utf8.ValidString(s) {
				t.Errorf("%.20q…: suggestion %q", name, s)
			}
		}
		// Generous for a loaded CI machine: BenchmarkSuggest measures.
		if took > time.Second {
			t.Errorf("%.20q…: %s", name, took)
		}
	}
}

// osa against the distance computed in full, without band or bound; and
// the character sets never pass over a name within the distance.
func TestOSA(t *testing.T) {
	full := func(a, b string) int {
		d := make([][]int, len(a)+1)
		for i := range d {
			d[i] = make([]int, len(b)+1)
			d[i][0] = i
		}
		for j := range d[0] {
			d[0][j] = j
		}
		for i := 1; i <= len(a); i++ {
			for j := 1; j <= len(b); j++ {
				cost := 1
				if a[i-1] == b[j-1] {
					cost = 0
				}
				d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
				if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
					d[i][j] = min(d[i][j], d[i-2][j-2]+1)
				}
			}
		}
		return d[len(a)][len(b)]
	}
	r := rand.New(rand.NewPCG(1, 2))
	word := func() string {
		b := make([]byte, r.IntN(9))
		for i := range b {
			b[i] = "abc-_.\xc3\xa9Z"[r.IntN(9)]
		}
		return string(b)
	}
	buf := make([]int, 3)
	for range 20000 {
		a, b, k := word(), word(), r.IntN(4)
		want := min(full(a, b), k+1)
		if got := osa(a, b, k, buf); got != want {
			t.Fatalf("osa(%q, %q, %d) = %d, want %d", a, b, k, got, want)
		}
		if d := full(a, b); bits.OnesCount64(chars(a)&^chars(b)) > d || bits.OnesCount64(chars(b)&^chars(a)) > d {
			t.Fatalf("chars(%q) and chars(%q) differ in more than their distance %d", a, b, d)
		}
	}
	for _, tt := range []struct {
		a, b string
		want int
	}{{"helo", "hello", 1}, {"pyhton3", "python3", 1}, {"ca", "abc", 3}, {"", "ab", 2}} {
		if got := osa(tt.a, tt.b, 3, nil); got != tt.want {
			t.Errorf("osa(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

// The searcher suggests from the list in memory, and nothing before it
// has one: it neither waits for the list nor starts making it.
func TestSearcherSuggestWithoutList(t *testing.T) {
	s := &Searcher{}
	if got := s.Suggest("helo"); got != nil {
		t.Errorf("without a list: %q", got)
	}
	if s.loading != nil {
		t.Error("Suggest started making the list")
	}
	s.idx = suggestIndex(realNames)
	if got := s.Suggest("helo"); !slices.Equal(got, []string{"hello", "helm"}) {
		t.Errorf("with the list: %q", got)
	}
}

// generatedNames is a package list shaped like nixpkgs' (about 120,000
// attributes): top-level names of one to three syllables joined by "-",
// some with a version suffix (nodejs_22, python313) or a leading
// underscore, and the big nested sets (python3xxPackages with the same
// members, haskellPackages, rPackages, perlPackages, nodePackages,
// emacsPackages, vimPlugins, xorg), with realNames among them. The same
// list every time.
func generatedNames(n int) []string {
	r := rand.New(rand.NewPCG(22, 1))
	syllables := strings.Fields("ba be bi bo bu ka ke ki ko ku ma me mi mo mu na ne ni no nu pa pe pi po pu ra re ri ro ru sa se si so su ta te ti to tu va ve vi vo vu za ze zi zo zu dra gre pli stu xen lib cli tool fmt net sql rs gtk qt")
	word := func(min, max int) string {
		var b strings.Builder
		for range min + r.IntN(max-min+1) {
			b.WriteString(syllables[r.IntN(len(syllables))])
		}
		return b.String()
	}
	name := func() string {
		s := word(2, 4)
		switch r.IntN(10) {
		case 0, 1:
			s += "-" + word(1, 3)
		case 2:
			s += "_" + fmt.Sprint(r.IntN(30))
		case 3:
			s += fmt.Sprint(r.IntN(400))
		case 4:
			s = "_" + fmt.Sprint(r.IntN(10)) + s
		}
		return s
	}
	out := slices.Clone(realNames)
	python := make([]string, 6000)
	for i := range python {
		python[i] = name()
	}
	for _, set := range []string{"python3Packages", "python311Packages", "python312Packages", "python313Packages"} {
		for _, m := range python {
			out = append(out, set+"."+m)
		}
	}
	for set, size := range map[string]int{"haskellPackages": 18000, "rPackages": 22000, "perlPackages": 3500,
		"nodePackages": 2000, "emacsPackages.melpaPackages": 5000, "vimPlugins": 2000, "xorg": 900} {
		for range size {
			out = append(out, set+"."+name())
		}
	}
	for len(out) < n {
		out = append(out, name())
	}
	slices.Sort(out[len(realNames):])
	return slices.Compact(out)[:min(n, len(out))]
}

// BenchmarkSuggest is the time of one suggestion over 120,000 names, by
// kind of name (docs/measurements.md).
func BenchmarkSuggest(b *testing.B) {
	x := suggestIndex(generatedNames(120000))
	for _, name := range []string{"helo", "pyhton3", "nodejs22", "requets", "1password-cli", "qwertyuiop", strings.Repeat("x", maxSuggestName)} {
		b.Run(fmt.Sprintf("%.16s", name), func(b *testing.B) {
			for b.Loop() {
				x.suggest.suggest(name)
			}
		})
	}
}

// BenchmarkSuggestIndex is the time to prepare a list of 120,000 names
// for suggestions, once per package list.
func BenchmarkSuggestIndex(b *testing.B) {
	x := suggestIndex(generatedNames(120000))
	for b.Loop() {
		newSuggester(x)
	}
}

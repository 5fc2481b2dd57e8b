package layers

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestGroup(t *testing.T) {
	// The worked example of the package documentation.
	example := []Path{
		{Name: "hello", Size: 10, References: []string{"glibc", "libidn", "hello"}},
		{Name: "glibc", Size: 30, References: []string{"glibc"}},
		{Name: "libidn", Size: 1, References: []string{"glibc"}},
		{Name: "bash", Size: 5, References: []string{"glibc", "/nix/store/not-in-closure"}},
	}

	tests := []struct {
		name   string
		paths  []Path
		budget int
		want   [][]string
	}{
		{"empty", nil, 5, nil},
		{"worked example", example, 3, [][]string{{"glibc"}, {"bash", "libidn"}, {"hello"}}},
		{"within budget: one path each, dependencies first", example, 4,
			[][]string{{"glibc"}, {"bash"}, {"libidn"}, {"hello"}}},
		{"budget above size", example, 100,
			[][]string{{"glibc"}, {"bash"}, {"libidn"}, {"hello"}}},
		{"budget 1", example, 1, [][]string{{"bash", "glibc", "hello", "libidn"}}},
		{"budget 0 means 1", example, 0, [][]string{{"bash", "glibc", "hello", "libidn"}}},
		{"negative budget means 1", example, -3, [][]string{{"bash", "glibc", "hello", "libidn"}}},
		{"budget 2: largest alone, rest shared", example, 2,
			[][]string{{"glibc"}, {"bash", "hello", "libidn"}}},
		{"size ties broken by name", []Path{
			{Name: "d", Size: 7}, {Name: "c", Size: 7}, {Name: "b", Size: 7}, {Name: "a", Size: 7},
		}, 3, [][]string{{"a"}, {"b"}, {"c", "d"}}},
		{"no references: order by name", []Path{
			{Name: "z", Size: 1}, {Name: "y", Size: 2}, {Name: "x", Size: 3},
		}, 3, [][]string{{"x"}, {"y"}, {"z"}}},
		{"chain: deepest first", []Path{
			{Name: "a", Size: 1, References: []string{"b"}},
			{Name: "b", Size: 1, References: []string{"c"}},
			{Name: "c", Size: 1},
		}, 3, [][]string{{"c"}, {"b"}, {"a"}}},
		{"duplicates merged", []Path{
			{Name: "a", Size: 1},
			{Name: "b", Size: 5, References: []string{"a"}},
			{Name: "a", Size: 9},
		}, 5, [][]string{{"a"}, {"b"}}},
		{"cycle tolerated", []Path{
			{Name: "a", Size: 3, References: []string{"b"}},
			{Name: "b", Size: 2, References: []string{"a", "c"}},
			{Name: "c", Size: 1},
		}, 3, [][]string{{"c"}, {"a"}, {"b"}}},
		{"over budget: biggest alone, order by closure", []Path{
			{Name: "app", Size: 50, References: []string{"lib", "glibc"}},
			{Name: "lib", Size: 2, References: []string{"glibc"}},
			{Name: "tiny", Size: 1, References: []string{"glibc"}},
			{Name: "glibc", Size: 30},
		}, 3, [][]string{{"glibc"}, {"lib", "tiny"}, {"app"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Group(tt.paths, tt.budget)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Group(budget %d) = %q, want %q", tt.budget, got, tt.want)
			}
		})
	}
}

// TestGroupByRoots covers step 3 of the package doc: over budget, each
// root's closure is grouped as it would be alone (largest closure first),
// units are ranked by size × log2(2 + referrers), and the smallest groups
// of a union share one layer.
func TestGroupByRoots(t *testing.T) {
	big := []Path{
		{Name: "b", Size: 100, References: []string{"l1", "l2", "l3", "l4", "l5", "t1", "t2"}},
		{Name: "l1", Size: 10}, {Name: "l2", Size: 9}, {Name: "l3", Size: 8},
		{Name: "l4", Size: 7}, {Name: "l5", Size: 6}, {Name: "t1", Size: 1}, {Name: "t2", Size: 1},
	}
	// y is smaller than x but three paths refer to it, x only one.
	shared := []Path{
		{Name: "r", Size: 50, References: []string{"x", "y", "z", "w"}},
		{Name: "x", Size: 10}, {Name: "y", Size: 8},
		{Name: "z", Size: 1, References: []string{"y"}}, {Name: "w", Size: 1, References: []string{"y"}},
	}
	tests := []struct {
		name   string
		paths  []Path
		budget int
		pop    map[string]int
		want   [][]string
	}{
		{"one root: most valuable alone, the rest shared", big, 4, nil,
			[][]string{{"l1"}, {"l2"}, {"l3", "l4", "l5", "t1", "t2"}, {"b"}}},
		{"a small root added: the big root's groups stay, the smallest groups share", append(slices.Clone(big), Path{Name: "s", Size: 2}), 4, nil,
			[][]string{{"l1"}, {"l2", "s"}, {"l3", "l4", "l5", "t1", "t2"}, {"b"}}},
		{"referred to by more: a layer of its own before a bigger path", shared, 3, nil,
			[][]string{{"w", "x", "z"}, {"y"}, {"r"}}},
		{"with popularity data the table's counts rank", shared, 3, map[string]int{"x": 500},
			[][]string{{"w", "y", "z"}, {"x"}, {"r"}}},
		{"a cycle nothing refers to is a root", []Path{
			{Name: "a", Size: 3, References: []string{"b"}},
			{Name: "b", Size: 2, References: []string{"a", "c"}},
			{Name: "c", Size: 1},
			{Name: "d", Size: 4, References: []string{"c"}},
		}, 2, nil, [][]string{{"a", "b", "c"}, {"d"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := GroupWith(tt.paths, tt.budget, Options{Popularity: tt.pop})
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("GroupWith(budget %d) = %q, want %q", tt.budget, got, tt.want)
			}
		})
	}
}

// TestGroupStable checks the property the simple grouping exists for: a big
// path gets the same single-path layer in different images.
func TestGroupWith(t *testing.T) {
	example := []Path{
		{Name: "/nix/store/00000000000000000000000000000003-hello-2.12", Size: 10, References: []string{
			"/nix/store/00000000000000000000000000000002-glibc-2.40", "/nix/store/00000000000000000000000000000005-libidn-1"}},
		{Name: "/nix/store/00000000000000000000000000000002-glibc-2.40", Size: 30},
		{Name: "/nix/store/00000000000000000000000000000005-libidn-1", Size: 1, References: []string{"/nix/store/00000000000000000000000000000002-glibc-2.40"}},
		{Name: "/nix/store/00000000000000000000000000000001-bash-5", Size: 5, References: []string{"/nix/store/00000000000000000000000000000002-glibc-2.40"}},
	}
	short := func(groups [][]string) [][]string {
		for _, g := range groups {
			for i := range g {
				g[i] = Name(g[i])
			}
		}
		return groups
	}
	pop := map[string]int{"glibc-2.40": 900, "bash-5": 40, "libidn-1": 1}
	tests := []struct {
		name   string
		pop    map[string]int
		budget int
		want   [][]string
	}{
		{"no popularity: as Group", nil, 3, [][]string{{"glibc-2.40"}, {"bash-5", "libidn-1"}, {"hello-2.12"}}},
		{"worked example: private libidn joins hello", pop, 3, [][]string{{"glibc-2.40"}, {"bash-5"}, {"hello-2.12", "libidn-1"}}},
		{"units also within budget", pop, 10, [][]string{{"glibc-2.40"}, {"bash-5"}, {"hello-2.12", "libidn-1"}}},
		{"units over budget", pop, 2, [][]string{{"glibc-2.40"}, {"bash-5", "hello-2.12", "libidn-1"}}},
		{"unknown names are not private", map[string]int{"glibc-2.40": 5}, 10,
			[][]string{{"glibc-2.40"}, {"bash-5"}, {"libidn-1"}, {"hello-2.12"}}},
		{"private by the table but two referrers here: alone", map[string]int{"glibc-2.40": 1}, 10,
			[][]string{{"glibc-2.40"}, {"bash-5"}, {"libidn-1"}, {"hello-2.12"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := short(GroupWith(example, tt.budget, Options{Popularity: tt.pop}))
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("GroupWith(budget %d) = %q, want %q", tt.budget, got, tt.want)
			}
		})
	}
}

func TestName(t *testing.T) {
	for in, want := range map[string]string{
		"/nix/store/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1-glibc-2.40-66": "glibc-2.40-66",
		"/nix/store/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello":         "hello",
		"glibc":             "glibc",
		"/tmp/x/short-name": "short-name",
	} {
		if got := Name(in); got != want {
			t.Errorf("Name(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParsePopularity(t *testing.T) {
	tests := []struct {
		in      string
		want    map[string]int
		wantErr bool
	}{
		{`{"glibc-2.40-66": 8123, "zlib-1.3.1": 12}`, map[string]int{"glibc-2.40-66": 8123, "zlib-1.3.1": 12}, false},
		{`{}`, map[string]int{}, false},
		{`[]`, nil, true},
		{`null`, nil, true},
		{`{"a": -1}`, nil, true},
		{`{"a": 1.5}`, nil, true},
		{`{"a": 1} {"b": 2}`, nil, true},
		{`{"a": 1`, nil, true},
	}
	for _, tt := range tests {
		got, err := ParsePopularity(strings.NewReader(tt.in))
		if (err != nil) != tt.wantErr || (!tt.wantErr && !reflect.DeepEqual(got, tt.want)) {
			t.Errorf("ParsePopularity(%s) = %v, %v", tt.in, got, err)
		}
	}
}

func TestGroupStable(t *testing.T) {
	glibc := Path{Name: "glibc", Size: 30}
	python := Path{Name: "python3", Size: 100, References: []string{"glibc"}}
	git := Path{Name: "git", Size: 40, References: []string{"glibc", "python3"}}
	small := func(name string) Path { return Path{Name: name, Size: 1, References: []string{"glibc"}} }

	a := Group([]Path{glibc, python, small("s1"), small("s2"), small("s3")}, 3)
	b := Group([]Path{git, glibc, python, small("t1"), small("t2"), small("t3")}, 4)
	for _, single := range []string{"glibc", "python3"} {
		if !slices.ContainsFunc(a, func(g []string) bool { return slices.Equal(g, []string{single}) }) ||
			!slices.ContainsFunc(b, func(g []string) bool { return slices.Equal(g, []string{single}) }) {
			t.Errorf("%s not in a layer of its own in both images: %q and %q", single, a, b)
		}
	}
}

// randomClosure returns n paths with pseudo-random sizes and references,
// some of them duplicated, outside the closure, self or cyclic.
func randomClosure(r *rand.Rand, n int) []Path {
	paths := make([]Path, n)
	for i := range paths {
		paths[i] = Path{Name: fmt.Sprintf("/nix/store/%03d-p", r.IntN(n+n/4+1)), Size: int64(r.IntN(5))}
	}
	for i := range paths {
		for range r.IntN(4) {
			paths[i].References = append(paths[i].References, fmt.Sprintf("/nix/store/%03d-p", r.IntN(n+2)))
		}
	}
	return paths
}

func FuzzGroup(f *testing.F) {
	f.Add(uint64(1), uint8(10), 3)
	f.Add(uint64(2), uint8(0), 1)
	f.Add(uint64(3), uint8(50), 60)
	f.Add(uint64(4), uint8(200), -1)
	f.Fuzz(func(t *testing.T, seed uint64, size uint8, budget int) {
		r := rand.New(rand.NewPCG(seed, 0))
		paths := randomClosure(r, int(size))
		budget %= 300
		var pop map[string]int
		if seed%2 == 1 {
			pop = map[string]int{}
			for _, p := range paths {
				pop[Name(p.Name)] = int(r.IntN(3))
			}
		}
		groups := GroupWith(paths, budget, Options{Popularity: pop})

		if len(groups) > max(budget, 1) {
			t.Fatalf("%d groups, budget %d", len(groups), budget)
		}
		seen := map[string]int{}
		for _, g := range groups {
			if len(g) == 0 {
				t.Fatalf("empty group in %q", groups)
			}
			if !slices.IsSorted(g) {
				t.Fatalf("group not sorted: %q", g)
			}
			for _, name := range g {
				seen[name]++
			}
		}
		for _, p := range paths {
			if seen[p.Name] != 1 {
				t.Fatalf("%s is in %d groups", p.Name, seen[p.Name])
			}
		}
		if len(seen) != len(slices.Compact(slices.Sorted(func(yield func(string) bool) {
			for _, p := range paths {
				if !yield(p.Name) {
					return
				}
			}
		}))) {
			t.Fatalf("groups hold paths that are not in the input: %q", groups)
		}

		shuffled := slices.Clone(paths)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		for i := range shuffled {
			refs := slices.Clone(shuffled[i].References)
			r.Shuffle(len(refs), func(a, b int) { refs[a], refs[b] = refs[b], refs[a] })
			shuffled[i].References = refs
		}
		if again := GroupWith(shuffled, budget, Options{Popularity: pop}); !reflect.DeepEqual(again, groups) {
			t.Fatalf("not deterministic under permutation:\n%q\n%q", groups, again)
		}
	})
}

func BenchmarkGroup(b *testing.B) {
	paths := randomClosure(rand.New(rand.NewPCG(1, 2)), 3000)
	for b.Loop() {
		Group(paths, 100)
	}
}

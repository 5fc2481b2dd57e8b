package internal

import (
	"fmt"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// module is this module's path; imports under it are the project's own.
const module = "github.com/nixery/nixery"

// tiers is the layering of doc.go: a package imports only packages of a
// lower tier. Every package under internal/ and cmd/ must be listed, so
// that a new package takes a place in it.
var tiers = map[string]int{
	"internal/need":     0,
	"internal/bounded":  0,
	"internal/flight":   0,
	"internal/every":    0,
	"internal/fault":    0,
	"internal/artifact": 0,

	"internal/image":    1,
	"internal/layers":   1,
	"internal/archive":  1,
	"internal/manifest": 1,
	"internal/redact":   1,
	"internal/access":   1,
	"internal/demo":     1,
	"internal/server":   1,
	"internal/route":    1,
	"internal/attest":   1,
	"internal/certs":    1,
	"internal/sign":     1,
	"internal/treemap":  1,

	"internal/nix":     2,
	"internal/storage": 2,

	"internal/source":   3,
	"internal/metadata": 3,

	"internal/config":       4,
	"internal/builder":      4,
	"internal/gc":           4,
	"internal/sourcehealth": 4,
	"internal/search":       4,
	"internal/supplychain":  4,
	"internal/readiness":    4,

	"internal/registry":    5,
	"internal/buildclient": 5,

	"internal/web":     6,
	"internal/metrics": 6,

	"cmd/nixery": 7,
}

// tierOf is the tier of a package directory (relative to the module): a
// test-helper package X/Ytest has X's.
func tierOf(pkg string) (int, bool) {
	if t, ok := tiers[pkg]; ok {
		return t, true
	}
	if dir, base := path.Split(pkg); strings.HasSuffix(base, "test") {
		return tierOf(strings.TrimSuffix(dir, "/"))
	}
	return 0, false
}

// violations checks an import graph (package → the project's packages
// it imports) against tiers.
func violations(graph map[string][]string) []string {
	var out []string
	for pkg, imports := range graph {
		t, ok := tierOf(pkg)
		if !ok {
			out = append(out, fmt.Sprintf("%s has no tier: add it to tiers (and to doc.go and the table of docs/architecture.md)", pkg))
			continue
		}
		for _, imp := range imports {
			it, ok := tierOf(imp)
			switch {
			case !ok:
				out = append(out, fmt.Sprintf("%s imports %s, which has no tier", pkg, imp))
			case strings.HasPrefix(pkg, imp+"/"):
				// A test helper of imp.
			case it >= t:
				out = append(out, fmt.Sprintf("%s (tier %d) imports %s (tier %d): imports go to lower tiers only", pkg, t, imp, it))
			}
		}
	}
	slices.Sort(out)
	return out
}

// importGraph reads the imports of every non-test Go file under the
// module's internal/ and cmd/ directories.
func importGraph(t *testing.T, root string) map[string][]string {
	t.Helper()
	graph := map[string][]string{}
	fset := token.NewFileSet()
	for _, top := range []string{"internal", "cmd"} {
		err := filepath.WalkDir(filepath.Join(root, top), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
				return err
			}
			f, err := parser.ParseFile(fset, p, nil, parser.ImportsOnly)
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(root, filepath.Dir(p))
			if err != nil {
				return err
			}
			pkg := filepath.ToSlash(rel)
			if pkg == "internal" {
				return nil // this package: documentation and this test
			}
			if _, ok := graph[pkg]; !ok {
				graph[pkg] = nil
			}
			for _, imp := range f.Imports {
				ip := strings.Trim(imp.Path.Value, `"`)
				if own, ok := strings.CutPrefix(ip, module+"/"); ok && !slices.Contains(graph[pkg], own) {
					graph[pkg] = append(graph[pkg], own)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return graph
}

// TestLayering fails when an import breaks the layering of doc.go, as
// go-containerregistry's depcheck does for its registry package.
func TestLayering(t *testing.T) {
	graph := importGraph(t, "..")
	if len(graph) < len(tiers) {
		t.Fatalf("read %d packages, fewer than the %d in tiers", len(graph), len(tiers))
	}
	for pkg := range tiers {
		if _, ok := graph[pkg]; !ok {
			t.Errorf("tiers lists %s, which has no Go files", pkg)
		}
	}
	for _, v := range violations(graph) {
		t.Error(v)
	}
}

// TestLayeringCatches shows that the check fails for what it must catch.
func TestLayeringCatches(t *testing.T) {
	for _, tt := range []struct {
		name  string
		graph map[string][]string
		want  int
	}{
		{"a leaf importing the registry", map[string][]string{"internal/layers": {"internal/registry"}}, 1},
		{"nix importing storage, its own tier", map[string][]string{"internal/nix": {"internal/storage"}}, 1},
		{"a new package without a tier", map[string][]string{"internal/newthing": nil}, 1},
		{"the builder importing down", map[string][]string{"internal/builder": {"internal/nix", "internal/layers", "internal/metadata"}}, 0},
		{"a test helper importing its package", map[string][]string{"internal/storage/storagetest": {"internal/storage", "internal/need"}}, 0},
	} {
		if got := violations(tt.graph); len(got) != tt.want {
			t.Errorf("%s: %d violations %q, want %d", tt.name, len(got), got, tt.want)
		}
	}
}

// TestArchitectureTable checks that the architecture table of
// docs/architecture.md (the README links to it) names every package of
// tiers.
func TestArchitectureTable(t *testing.T) {
	page, err := os.ReadFile("../docs/architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(page), "\n| package | its one job |\n")
	if !ok {
		t.Fatal("docs/architecture.md has no table | package | its one job |")
	}
	table, _, _ = strings.Cut(table, "\n\n")
	for pkg := range tiers {
		if !strings.Contains(table, "| `"+pkg+"` |") {
			t.Errorf("docs/architecture.md's table has no row | `%s` |", pkg)
		}
	}
}

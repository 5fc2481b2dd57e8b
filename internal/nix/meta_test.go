package nix

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestMeta: Build and Resolve report what the demo set's meta says of
// each requested package (nixpkgs-shaped licences, one or a list;
// homepage a string or a list), and the meta lines are not logged.
func TestMeta(t *testing.T) {
	src := demoSource(t)
	var lines []string
	r := &Runner{Timeout: time.Minute, Log: func(l string) { lines = append(lines, l) }}
	names := []string{"hello", "jq", "git", "zlib", "python3.withpackages.numpy"}
	want := map[string]Meta{
		"hello": {PName: "hello", Version: "2.12.1", Homepage: "https://www.gnu.org/software/hello/manual/",
			Licenses: []License{{SPDXID: "GPL-3.0-or-later", ShortName: "gpl3Plus", FullName: "GNU General Public License v3.0 or later"}}},
		"jq": {PName: "jq", Version: "1.7", Homepage: "https://jqlang.github.io/jq/",
			Licenses: []License{{SPDXID: "MIT", ShortName: "mit", FullName: "MIT License"}, {SPDXID: "CC-BY-3.0", ShortName: "cc-by-30", FullName: "Creative Commons Attribution 3.0"}}},
		"git": {PName: "git", Version: "2.42.0", Homepage: "https://git-scm.com/",
			Licenses: []License{{SPDXID: "GPL-2.0-or-later", ShortName: "gpl2Plus", FullName: "GNU General Public License v2.0 or later"}}},
		"zlib":                       {PName: "zlib", Version: "1.3"},
		"python3.withpackages.numpy": {PName: "python3", Version: "3.11.6-env"},
	}
	check := func(t *testing.T, got []Resolution) {
		t.Helper()
		if len(got) != len(names) {
			t.Fatalf("%d packages, want %d", len(got), len(names))
		}
		for _, p := range got {
			m := p.Meta
			if !strings.HasPrefix(m.DrvPath, "/nix/store/") || !strings.HasSuffix(m.DrvPath, ".drv") {
				t.Errorf("%s: drvPath %q", p.Name, m.DrvPath)
			}
			m.DrvPath = ""
			if !reflect.DeepEqual(m, want[p.Name]) {
				t.Errorf("%s: meta %+v\nwant %+v", p.Name, m, want[p.Name])
			}
		}
	}
	t.Run("build", func(t *testing.T) {
		req := src
		req.Packages = names
		res, err := r.Build(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		check(t, res.Packages)
	})
	t.Run("resolve", func(t *testing.T) {
		res, err := r.Resolve(context.Background(), ResolveRequest{SrcType: src.SrcType, SrcArgs: src.SrcArgs, System: src.System, Names: names})
		if err != nil {
			t.Fatal(err)
		}
		check(t, res)
	})
	for _, l := range lines {
		if strings.Contains(l, "nixery-meta") {
			t.Errorf("a meta line was logged: %q", l)
		}
	}
}

// TestMetaTolerant: whatever a package set's meta holds (attributes that
// throw, a string licence, an empty homepage list, no pname, no meta), a
// package resolves, with the meta that could be read. Resolve only evaluates, so the derivations need not
// build.
func TestMetaTolerant(t *testing.T) {
	demoSource(t) // skips without Nix
	dir := t.TempDir()
	set := `{ system ? builtins.currentSystem, ... }:
let
  drv = name: derivation { inherit name system; builder = "/bin/sh"; args = [ "-c" "echo > $out" ]; };
in {
  throwing = drv "throwing-1.0" // { pname = "throwing"; version = throw "no version"; meta = { license = throw "no licence"; homepage = throw "no homepage"; }; };
  legacy = drv "legacy-2.0" // { meta = { license = "mit"; homepage = [ ]; }; };
  mixed = drv "mixed-3" // { meta = { license = [ { spdxId = "Apache-2.0"; } "bsd3" 42 { fullName = "Some Licence"; url = throw "no url"; } ]; homepage = [ "https://a.example" "https://b.example" ]; }; };
  nometa = drv "nometa-0.1";
}
`
	if err := os.WriteFile(filepath.Join(dir, "default.nix"), []byte(set), 0o644); err != nil {
		t.Fatal(err)
	}
	r := &Runner{Timeout: time.Minute}
	names := []string{"throwing", "legacy", "mixed", "nometa"}
	res, err := r.Resolve(context.Background(), ResolveRequest{SrcType: "path", SrcArgs: dir, System: "x86_64-linux", Names: names})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Meta{
		"throwing": {PName: "throwing"},
		"legacy":   {PName: "legacy", Version: "2.0", Licenses: []License{{SPDXID: "mit", ShortName: "mit"}}},
		"mixed":    {PName: "mixed", Version: "3", Homepage: "https://a.example", Licenses: []License{{SPDXID: "Apache-2.0"}, {SPDXID: "bsd3", ShortName: "bsd3"}, {FullName: "Some Licence"}}},
		"nometa":   {PName: "nometa", Version: "0.1"},
	}
	if len(res) != len(names) {
		t.Fatalf("resolved %d of %d: %+v", len(res), len(names), res)
	}
	for _, p := range res {
		m := p.Meta
		if !strings.HasSuffix(m.DrvPath, ".drv") {
			t.Errorf("%s: drvPath %q", p.Name, m.DrvPath)
		}
		m.DrvPath = ""
		if !reflect.DeepEqual(m, want[p.Name]) {
			t.Errorf("%s: meta %+v\nwant %+v", p.Name, m, want[p.Name])
		}
	}
}

// TestMetaLine: a meta line counts before the packages trace only
// (evaluation prints both before any builder runs, so that a builder
// printing a look-alike changes nothing), the first for a name wins, and
// a line that is no JSON object gives nothing.
func TestMetaLine(t *testing.T) {
	w := &lineWriter{}
	for _, l := range []string{
		`trace: nixery-meta: {"name":"hello","pname":"hello","version":"2.12.1","license":[{"spdxId":"MIT"}]}`,
		`trace: nixery-meta: {"name":"hello","pname":"evil"}`,
		`trace: nixery-meta: not json`,
		`trace: nixery-packages: [{"name":"hello","outputs":["/nix/store/x-hello"],"programs":[]}]`,
		`trace: nixery-meta: {"name":"jq","pname":"evil"}`,
	} {
		w.Write([]byte(l + "\n"))
	}
	want := map[string]Meta{"hello": {PName: "hello", Version: "2.12.1", Licenses: []License{{SPDXID: "MIT"}}}}
	if !reflect.DeepEqual(w.metas, want) {
		t.Errorf("metas %+v, want %+v", w.metas, want)
	}
}

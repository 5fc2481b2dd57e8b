package nix

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nixery/nixery/internal/need"
)

func needNix(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("nix-instantiate"); err != nil {
		need.Skip(t, "nix-instantiate is not installed")
	}
}

// writeSet writes a package set (a Nix expression) into a new directory.
func writeSet(t *testing.T, expr string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "default.nix"), []byte(expr), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func attrs(pkgs []Package) []string {
	var out []string
	for _, p := range pkgs {
		out = append(out, p.Attr)
	}
	return out
}

// Derivation look-alikes are enough: the listing only reads type,
// version and meta.description.
const fakeDrv = `drv = version: description: { type = "derivation"; inherit version; meta = { inherit description; }; };`

func TestPackagesSmallSet(t *testing.T) {
	needNix(t)
	dir := writeSet(t, `{ system ? builtins.currentSystem, ... }:
let `+fakeDrv+` in {
  hello = drv "2.12" "A friendly greeting";
  noMeta = { type = "derivation"; };
  badVersion = { type = "derivation"; version = throw "broken version"; };
  throws = throw "this package is broken";
  aFunction = x: x;
  aString = "not a package";
  nested = { xev = drv "1.2" "X events"; deeper = { hidden = drv "1" "too deep"; }; };
  marked = { recurseForDerivations = true; inner = { recurseForDerivations = true; deep = drv "3" "marked all the way"; }; };
}`)
	pkgs, err := (&Runner{}).Packages(context.Background(), SearchRequest{SrcType: "path", SrcArgs: dir})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"hello", "marked.inner.deep", "nested.xev", "noMeta"}
	if got := attrs(pkgs); !slices.Equal(got, want) {
		t.Errorf("packages = %q, want %q", got, want)
	}
	if i := slices.IndexFunc(pkgs, func(p Package) bool { return p.Attr == "hello" }); i < 0 ||
		pkgs[i].Version != "2.12" || pkgs[i].Description != "A friendly greeting" {
		t.Errorf("hello = %+v", pkgs)
	}
}

// A nixpkgs-sized set (more top-level attributes than smallSet) is walked
// the way nix-env -qa walks it: nested sets only with recurseForDerivations.
func TestPackagesLargeSetHonoursRecurseForDerivations(t *testing.T) {
	needNix(t)
	dir := writeSet(t, `{ system ? builtins.currentSystem, ... }:
let `+fakeDrv+`
  many = builtins.listToAttrs (builtins.genList (i: { name = "pkg${toString i}"; value = drv "1.${toString i}" "package number ${toString i}"; }) 5000);
in many // {
  xorg = { recurseForDerivations = true; xev = drv "1.2" "X events"; };
  lib = { notWalked = drv "0" "inside a set without the mark"; };
  broken = throw "broken";
}`)
	start := time.Now()
	pkgs, err := (&Runner{}).Packages(context.Background(), SearchRequest{SrcType: "path", SrcArgs: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("listed %d packages in %s", len(pkgs), time.Since(start))
	got := attrs(pkgs)
	if len(pkgs) != 5001 || !slices.Contains(got, "xorg.xev") || slices.Contains(got, "lib.notWalked") {
		t.Errorf("%d packages; xorg.xev listed: %v; lib.notWalked listed: %v", len(pkgs),
			slices.Contains(got, "xorg.xev"), slices.Contains(got, "lib.notWalked"))
	}
}

func TestPackagesEvaluationError(t *testing.T) {
	needNix(t)
	dir := writeSet(t, `{ ... }: throw "the whole set is broken"`)
	_, err := (&Runner{}).Packages(context.Background(), SearchRequest{SrcType: "path", SrcArgs: dir})
	be, ok := err.(*BuildError)
	if !ok || !slices.ContainsFunc(be.Tail, func(l string) bool { return strings.Contains(l, "the whole set is broken") }) {
		t.Errorf("error = %v", err)
	}
}

// A package whose strings are not valid UTF-8 (a description in
// Latin-1) is left out of the listing and logged by name, and the rest
// listed: Nix 2.19 and later refuse to print such a string as JSON,
// which failed the whole listing; Nix 2.8 printed the bytes. Valid
// UTF-8 of every length stays, a description of more than 4 KiB cut at
// a character's boundary.
func TestPackagesNotUTF8(t *testing.T) {
	needNix(t)
	dir := writeSet(t, `{ ... }:
let `+fakeDrv+`
  latin1 = builtins.readFile ./latin1.txt;
  long = builtins.concatStringsSep "" (builtins.genList (i: "é€𝄞") 1000);
in {
  hello = drv "2.12" "A friendly greeting";
  unicode = drv "1.0" "café ☕ 𝄞 ü";
  badDescription = drv "1.0" latin1;
  badVersion = drv latin1 "fine";
  longDescription = drv "1" long;
  longAndBad = drv "1" "${long}${latin1}";
  nested = { badToo = drv "1" "x${latin1}"; fine = drv "1" "fine"; };
}`)
	// "café" in Latin-1: é is the byte 0xE9, which no UTF-8 has alone.
	if err := os.WriteFile(filepath.Join(dir, "latin1.txt"), []byte("caf\xe9 au lait"), 0o644); err != nil {
		t.Fatal(err)
	}
	var rec recorder
	r := rec.runner(&Runner{Timeout: time.Minute})
	pkgs, err := r.Packages(context.Background(), SearchRequest{SrcType: "path", SrcArgs: dir})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"hello", "longAndBad", "longDescription", "nested.fine", "unicode"}
	if got := attrs(pkgs); !slices.Equal(got, want) {
		t.Errorf("packages = %q, want %q", got, want)
	}
	long := strings.Repeat("é€𝄞", 1000)
	for _, p := range pkgs {
		switch p.Attr {
		case "unicode":
			if p.Description != "café ☕ 𝄞 ü" {
				t.Errorf("unicode: %q", p.Description)
			}
		case "longDescription", "longAndBad":
			// 4096 bytes cut back to the end of a character.
			if !strings.HasPrefix(long, p.Description) || len(p.Description) > 4096 || len(p.Description) < 4093 {
				t.Errorf("%s: %d bytes, a prefix of the description: %v", p.Attr, len(p.Description), strings.HasPrefix(long, p.Description))
			}
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	log := rec.log.String()
	if !strings.Contains(log, "not valid UTF-8") || !strings.Contains(log, "count=3") {
		t.Errorf("log:\n%s", log)
	}
	for _, name := range []string{"badDescription", "badVersion", "nested.badToo"} {
		if !strings.Contains(log, name) {
			t.Errorf("the log does not name %s:\n%s", name, log)
		}
	}
}

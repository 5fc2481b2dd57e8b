// Package demotest gives tests the built-in demo package set, to build
// with real Nix.
package demotest

import (
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/nixery/nixery/internal/demo"
	"github.com/nixery/nixery/internal/need"
)

// Set extracts the demo package set into a new temporary directory and
// returns it. Without Nix or a static busybox the test is skipped, or
// failed when NIXERY_REQUIRE_E2E is set (as in CI).
func Set(t testing.TB) string {
	t.Helper()
	missing := func(err error) {
		t.Helper()
		need.Skip(t, err)
	}
	if _, err := exec.LookPath("nix-build"); err != nil {
		missing(err)
	}
	busybox, err := demo.FindBusybox()
	if err != nil {
		missing(err)
	}
	dir := filepath.Join(t.TempDir(), "pkgs")
	if err := demo.Extract(dir, busybox); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Package need is for tests that need something of the machine (Nix,
// git, a tmpfs, a browser): without it they skip, unless
// NIXERY_REQUIRE_E2E is set (as in CI), where a missing part fails the
// test instead of letting it pass silently.
package need

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// Required reports whether missing parts fail tests (NIXERY_REQUIRE_E2E).
func Required() bool { return os.Getenv("NIXERY_REQUIRE_E2E") != "" }

// Skip skips t with the message, or fails it when Required.
func Skip(t testing.TB, args ...any) {
	t.Helper()
	if Required() {
		t.Fatal(append([]any{"required (NIXERY_REQUIRE_E2E) but missing:"}, args...)...)
	}
	t.Skip(args...)
}

// Skipf is Skip with a format.
func Skipf(t testing.TB, format string, args ...any) {
	t.Helper()
	Skip(t, fmt.Sprintf(format, args...))
}

// Tool returns the path of a program, or skips (fails when Required).
func Tool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Skipf(t, "%s is not installed (bash scripts/deps installs it)", name)
	}
	return p
}

package nix

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// guardSet is a package set with nixpkgs' guard against old Nix, set
// above every Nix there is.
const guardSet = `{ system ? builtins.currentSystem, ... }:
if builtins.compareVersions builtins.nixVersion "99" < 0 then abort ''
  This version of Nixpkgs requires Nix >= 99, please upgrade:

  - If you are running NixOS, nixos-rebuild can be used to upgrade your system.
''
else { hello = 1; }
`

func TestCheck(t *testing.T) {
	needNix(t)
	r := &Runner{Timeout: time.Minute, Offline: true}
	ctx := context.Background()
	for _, c := range []struct {
		name, expr string
		reason     string // "" for a set that evaluates
	}{
		{"fine", `{ system ? builtins.currentSystem, ... }: { hello = 1; }`, ""},
		{"not a function", `{ hello = 1; }`, ""},
		{"guard", guardSet, "This version of Nixpkgs requires Nix >= 99, please upgrade"},
		{"throw", `{ ... }: throw "the set is broken"`, "the set is broken"},
		{"not a set", `{ ... }: [ 1 ]`, "nixery: the package set is a list, not an attribute set"},
		{"syntax", `{ ... }: {`, "syntax error"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := r.Check(ctx, CheckRequest{SrcType: "path", SrcArgs: writeSet(t, c.expr)})
			if c.reason == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var ee *EvaluationError
			if !errors.As(err, &ee) {
				t.Fatalf("%v (%T), want an EvaluationError", err, err)
			}
			if !strings.Contains(ee.Reason, c.reason) || strings.Contains(ee.Reason, "\n") {
				t.Errorf("reason %q, want one line with %q", ee.Reason, c.reason)
			}
		})
	}
}

// A check that runs out of time, or whose caller gives up, is no
// verdict on the package set.
func TestCheckStoppedIsNoVerdict(t *testing.T) {
	needNix(t)
	r := &Runner{Offline: true}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := r.Check(ctx, CheckRequest{SrcType: "path", SrcArgs: writeSet(t, guardSet)})
	var ee *EvaluationError
	if err == nil || errors.As(err, &ee) {
		t.Errorf("a cancelled check: %v, want an error that is no EvaluationError", err)
	}
}

func TestEvaluationReason(t *testing.T) {
	for _, c := range []struct {
		tail []string
		want string
	}{
		// Nix 2.8
		{[]string{"error: evaluation aborted with the following error message: 'This version of Nixpkgs requires Nix >= 2.18.0, please upgrade:",
			"", "       - If you are running NixOS, `nixos-rebuild' can be used to upgrade your system.", "       '"},
			"This version of Nixpkgs requires Nix >= 2.18.0, please upgrade"},
		// Nix 2.13 and later: a trace between "error:" and the message.
		{[]string{"error:", "       … while calling the 'abort' builtin", "         at /srv/pkgs/default.nix:3:3:",
			"       error: evaluation aborted with the following error message: 'This version of Nixpkgs requires Nix >= 2.18.0, please upgrade:",
			"       - If you are running NixOS, `nixos-rebuild' can be used to upgrade your system."},
			"This version of Nixpkgs requires Nix >= 2.18.0, please upgrade"},
		{[]string{"error: unable to download 'https://user:secret@example.org/x.tar.gz': HTTP error 404"},
			"unable to download 'https://user:xxxxx@example.org/x.tar.gz': HTTP error 404"},
		{[]string{"warning: something"}, "nix-instantiate: exit status 1: warning: something"},
		{[]string{"error: " + strings.Repeat("é", 400)}, strings.Repeat("é", 256) + " … [800 bytes]"},
	} {
		got := evaluationReason(&BuildError{Tail: c.tail, Err: errors.New("nix-instantiate: exit status 1")})
		if got != c.want {
			t.Errorf("%q:\n got %q\nwant %q", c.tail, got, c.want)
		}
	}
}

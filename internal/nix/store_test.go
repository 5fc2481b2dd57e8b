package nix

import (
	"bytes"
	"context"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestStoreBounds: MinFree and MaxFree reach every Nix process that may
// write to the store, as options that Nix accepts.
func TestStoreBounds(t *testing.T) {
	req := demoSource(t, "hello")
	const minFree, maxFree = 1, 1 << 40 // 1 byte: GC never starts, other tests' paths are safe
	var mu sync.Mutex
	var lines []string
	args := map[string][]string{}
	logLine := func(l string) { mu.Lock(); lines = append(lines, l); mu.Unlock() }
	r := &Runner{Timeout: time.Minute, MinFree: minFree, MaxFree: maxFree, Log: logLine,
		started: func(cmd *exec.Cmd) { mu.Lock(); args[cmd.Args[0]] = cmd.Args; mu.Unlock() }}
	if _, err := r.Build(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Packages(context.Background(), SearchRequest{SrcType: req.SrcType, SrcArgs: req.SrcArgs}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	has := func(args []string, opt ...string) bool {
		for i := range args {
			if slices.Equal(args[i:min(len(args), i+len(opt))], opt) {
				return true
			}
		}
		return false
	}
	for _, name := range []string{"nix-build", "nix-instantiate"} {
		if !has(args[name], "--option", "min-free", "1") || !has(args[name], "--option", "max-free", "1099511627776") {
			t.Errorf("%s ran without the store bounds: %q", name, args[name])
		}
	}
	for _, l := range lines {
		if strings.Contains(l, "min-free") || strings.Contains(l, "max-free") {
			t.Errorf("Nix did not take the options: %s", l)
		}
	}

	// The check above can fail: Nix does complain about a value it does
	// not take.
	var complaint []string
	var out bytes.Buffer
	(&Runner{}).run(context.Background(), &out, func(l string) { complaint = append(complaint, l) },
		"nix-instantiate", "--eval", "--expr", "1", "--option", "min-free", "lots")
	if !slices.ContainsFunc(complaint, func(l string) bool { return strings.Contains(l, "min-free") }) {
		t.Errorf("Nix took min-free = lots without a word (%q): the check above proves nothing", complaint)
	}

	// The zero Runner passes nothing.
	if got := (&Runner{}).storeBounds(); got != nil {
		t.Errorf("zero Runner: %q", got)
	}
}

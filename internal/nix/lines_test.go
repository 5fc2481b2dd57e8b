package nix

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nixery/nixery/internal/demo"
	"github.com/nixery/nixery/internal/need"
)

// TestLongLines: a line longer than MaxLineBytes is cut at a character
// boundary with a note, and however long a line without a newline grows,
// the writer holds at most maxScanBytes of it.
func TestLongLines(t *testing.T) {
	var lines []string
	w := &lineWriter{log: func(l string) { lines = append(lines, l) }}
	// 10 MiB of two-byte characters without a newline, written as a
	// process writes: in pieces.
	chunk := []byte(strings.Repeat("é", 16<<10))
	for range (10 << 20) / len(chunk) {
		w.Write(chunk)
		if cap(w.partial) > 2*maxScanBytes {
			t.Fatalf("the line buffer grew to %d bytes", cap(w.partial))
		}
	}
	w.Write([]byte("\nshort line\nexactly "))
	w.Write([]byte(strings.Repeat("a", MaxLineBytes-len("exactly ")) + "\n"))
	w.Write([]byte("no newline at the end: " + strings.Repeat("b", 2*MaxLineBytes)))
	w.flush()

	if len(lines) != 4 {
		t.Fatalf("%d lines, want 4", len(lines))
	}
	long := lines[0]
	marker := fmt.Sprintf(" … [line cut: %d bytes]", 10<<20)
	if !strings.HasSuffix(long, marker) || !utf8.ValidString(long) || len(long) > MaxLineBytes+len(marker) {
		t.Errorf("long line: %d bytes, valid UTF-8 %v, ends %q", len(long), utf8.ValidString(long), long[max(0, len(long)-60):])
	}
	if got := strings.TrimSuffix(long, marker); got != strings.Repeat("é", MaxLineBytes/2) {
		t.Errorf("long line cut to %d bytes, want %d", len(got), MaxLineBytes)
	}
	if lines[1] != "short line" || len(lines[2]) != MaxLineBytes || strings.Contains(lines[2], "cut") {
		t.Errorf("lines after it: %q, %d bytes %q…", lines[1], len(lines[2]), lines[2][:20])
	}
	if !strings.HasSuffix(lines[3], fmt.Sprintf("[line cut: %d bytes]", len("no newline at the end: ")+2*MaxLineBytes)) {
		t.Errorf("last line: …%q", lines[3][len(lines[3])-40:])
	}
	for _, l := range w.tail {
		if len(l) > MaxLineBytes+len(marker) {
			t.Errorf("a tail line of %d bytes", len(l))
		}
	}

	// A character cut in half by the cut: the whole character goes.
	lines = nil
	w.Write([]byte("x" + strings.Repeat("€", MaxLineBytes) + "\n"))
	if got := lines[0][:strings.Index(lines[0], " … [")]; len(got) != 1+(MaxLineBytes-1)/3*3 || !utf8.ValidString(got) {
		t.Errorf("cut through a character: %d bytes, valid %v", len(got), utf8.ValidString(got))
	}
}

// TestLongLineCutHidesCredentials: a URL that a cut goes through shows
// none of its password, though the "@" that marks it may be cut off: at
// MaxLineBytes, and at maxScanBytes, which colour codes (removed before
// the line is cut) can bring within MaxLineBytes of the start.
func TestLongLineCutHidesCredentials(t *testing.T) {
	const url = "https://alice:s3cr3t@example.org/p.git"
	for _, pad := range []string{"y", "\x1b[0m"} {
		limit := MaxLineBytes
		if pad != "y" {
			limit = maxScanBytes
		}
		for at := range len(url) + 1 { // the cut falls at url[at]
			var lines []string
			w := &lineWriter{log: func(l string) { lines = append(lines, l) }}
			prefix := strings.Repeat(pad, (limit-at)/len(pad)) + strings.Repeat("y", (limit-at)%len(pad))
			w.Write([]byte(prefix + url + " " + strings.Repeat("z", maxScanBytes) + "\n"))
			if len(lines) != 1 || strings.Contains(lines[0], "alice:s") || strings.Contains(lines[0], "s3") {
				t.Errorf("padding %q, cut at %q: …%q", pad, url[:at], lines[0][max(0, len(lines[0])-80):])
			}
		}
	}
}

// TestNixLongLine: a real builder that prints megabytes on one line.
func TestNixLongLine(t *testing.T) {
	if _, err := exec.LookPath("nix-build"); err != nil {
		need.Skip(t, "nix-build not installed")
	}
	bb, err := demo.FindBusybox()
	if err != nil {
		need.Skip(t, err)
	}
	t.Setenv("NIX_CONFIG", "substituters =")
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "bootstrap"), 0o755)
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "bootstrap", "busybox"), data, 0o755)
	const size = 3 << 20
	os.WriteFile(filepath.Join(dir, "default.nix"), []byte(fmt.Sprintf(`{ system ? builtins.currentSystem, ... }:
let bb = builtins.path { path = ./bootstrap; name = "bootstrap-busybox"; }; in {
  noisy = derivation {
    name = "noisy"; inherit system; builder = "${bb}/busybox";
    args = [ "sh" "-c" "${bb}/busybox head -c %d /dev/zero | ${bb}/busybox tr '\\0' x >&2; echo >&2; echo after the long line >&2; exit 1" ];
  };
}
`, size)), 0o644)

	var mu sync.Mutex
	var lines []string
	r := &Runner{Timeout: time.Minute, Offline: true, Log: func(l string) { mu.Lock(); lines = append(lines, l); mu.Unlock() }}
	_, err = r.Build(context.Background(), Request{SrcType: "path", SrcArgs: dir, Packages: []string{"noisy"}})
	var b *BuildError
	if !errors.As(err, &b) {
		t.Fatalf("got %v, want BuildError", err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, l := range append(lines, b.Tail...) {
		if len(l) > MaxLineBytes+64 {
			t.Errorf("a line of %d bytes", len(l))
		}
	}
	if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, "xxxx") && strings.Contains(l, "[line cut: ") }) {
		t.Errorf("no cut line among %d lines", len(lines))
	}
	if !slices.Contains(lines, "after the long line") {
		t.Errorf("the line after the long one is lost: %q", lines)
	}
	if len(err.Error()) > tailLines*(MaxLineBytes+64)+200 {
		t.Errorf("the error is %d bytes long", len(err.Error()))
	}
}

// What fetchGit says of a missing commit is recognised only for the
// package set's own commit: a dependency's missing commit is a build
// failure like any other.
func TestMissingRevisionLine(t *testing.T) {
	const rev = "0123456789abcdef0123456789abcdef01234567"
	other := "error: Cannot find Git revision '" + strings.Repeat("f", 40) + "' in ref"
	for _, tt := range []struct {
		name, lines, source string
		want                bool
	}{
		{"nix 2.8", "error: Cannot find Git revision '" + rev + "' in ref 'master' of repository '/r'! Please make sure", rev, true},
		{"remote", "fatal: remote error: upload-pack: not our ref " + rev, rev, true},
		// Nix 2.26 and 2.34, of a repository on this machine.
		{"local, nix 2.26", "       error: getting Git object '" + rev + "': object not found - no match for id (" + rev + ")", rev, true},
		{"local, nix 2.34", "       error: getting Git object '" + rev + "': object not found - no match for id (" + rev + ") (libgit2 error code = 9)", rev, true},
		{"another failure to get it", "       error: getting Git object '" + rev + "': permission denied", rev, false},
		{"another commit", other, rev, false},
		{"the source's, then a dependency's", "fatal: remote error: upload-pack: not our ref " + rev + "\n" + other, rev, true},
		{"not a git source", "error: Cannot find Git revision '" + rev + "' in ref", "", false},
		{"a short hash", "error: Cannot find Git revision '0123456' in ref", rev, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := &lineWriter{sourceRev: tt.source}
			w.Write([]byte(tt.lines + "\n"))
			if w.sourceMissing != tt.want {
				t.Errorf("source missing: %v, want %v", w.sourceMissing, tt.want)
			}
		})
	}
}

// What real Nix printed for two errors of a package set's packages
// (testdata/tails: an evaluation error in the set's file, and a throw),
// and what of it an error's tail keeps: Nix's message and the set's own
// frame, not the hint to use --show-trace in any of its forms, nor the
// frames that quote Nixery's build.nix (Nix 2.13 and later).
func TestTailOfCapturedErrors(t *testing.T) {
	evalfail := []string{
		"error: cannot add a string to an integer",
		"at /srv/pkgs/default.nix:7:33:",
		"6|   ok = mk \"ok\" \"mkdir $out\";",
		"7|   evalfail = mk \"evalfail\" (1 + \"a\");",
		"|                                 ^",
		"8|   throws = throw \"this package is broken\";",
	}
	throws := []string{"error: this package is broken"}
	for _, v := range []string{"2.8.0", "2.26.3", "2.34.8"} {
		for name, want := range map[string][]string{"evalfail": evalfail, "throws": throws} {
			t.Run(v+"/"+name, func(t *testing.T) {
				data, err := os.ReadFile(filepath.Join("testdata/tails", "nix-"+v+"-"+name+".txt"))
				if err != nil {
					t.Fatal(err)
				}
				var logged int
				w := &lineWriter{log: func(string) { logged++ }}
				w.Write(data)
				w.flush()
				var got []string
				for _, l := range w.tail {
					got = append(got, strings.TrimSpace(l))
				}
				if !slices.Equal(got, want) {
					t.Errorf("tail:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
				}
				if lines := strings.Count(strings.TrimRight(string(data), "\n"), "\n") + 1; logged != lines {
					t.Errorf("%d lines logged of %d: the log keeps every line", logged, lines)
				}
			})
		}
	}
}

// The hint to use --show-trace in each form Nix and Lix have printed,
// and lines that only look like it.
func TestShowTraceHint(t *testing.T) {
	for _, tt := range []struct {
		line string
		hint bool
	}{
		{"(use '--show-trace' to show detailed location information)", true},
		{"(stack trace truncated; use '--show-trace' to show the full trace)", true},
		{"(stack trace truncated; use '--show-trace' to show the full, detailed trace)", true},
		{"error: (use '--show-trace' to show detailed location information)", false},
		{"builder says: use '--show-trace' to show more", false},
	} {
		if got := showTraceRE.MatchString(tt.line); got != tt.hint {
			t.Errorf("%q: hint %v, want %v", tt.line, got, tt.hint)
		}
	}
}

// On this machine's Nix: an evaluation error in the package set's file
// leaves a tail with Nix's message and the set's frame, and none of
// build.nix's frames or the --show-trace hint, whatever the Nix.
func TestEvaluationErrorTail(t *testing.T) {
	needNix(t)
	dir := writeSet(t, `{ ... }: {
  bad = derivation { name = "bad"; system = "x86_64-linux"; builder = 1 + "a"; };
}`)
	var logged []string
	var mu sync.Mutex
	r := &Runner{Timeout: time.Minute, Log: func(l string) { mu.Lock(); logged = append(logged, l); mu.Unlock() }}
	_, err := r.Build(context.Background(), Request{SrcType: "path", SrcArgs: dir, Packages: []string{"bad"}})
	var b *BuildError
	if !errors.As(err, &b) {
		t.Fatalf("got %v, want a BuildError", err)
	}
	tail := strings.Join(b.Tail, "\n")
	t.Logf("tail:\n%s", tail)
	if !strings.Contains(tail, "cannot add a string to an integer") ||
		!strings.Contains(tail, filepath.Join(dir, "default.nix")+":2:") ||
		!strings.Contains(tail, `builder = 1 + "a"`) {
		t.Errorf("the tail lacks Nix's message or the set's frame")
	}
	for _, no := range []string{"«string»", "--show-trace", "nixery-packages", "builtins."} {
		if strings.Contains(tail, no) {
			t.Errorf("the tail has %q", no)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(logged) < len(b.Tail) {
		t.Errorf("%d lines logged, fewer than the tail's %d", len(logged), len(b.Tail))
	}
}

// What Nix 2.34 wrote to stderr as it fetched a git package set over the
// network (testdata/progress): git's progress meters, each a line of a
// hundred states separated by carriage returns. Each meter is one line,
// its final state, however the stream is cut into writes.
func TestProgressLines(t *testing.T) {
	data, err := os.ReadFile("testdata/progress/nix-2.34.8-git-fetch.txt")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"remote: Enumerating objects: 3005, done.",
		"remote: Counting objects: 100% (3005/3005), done.",
		"remote: Compressing objects: 100% (3004/3004), done.",
		"Receiving objects: 100% (3005/3005), 2.03 MiB | 11.58 MiB/s, done.",
		"remote: Total 3005 (delta 0), reused 0 (delta 0), pack-reused 0",
		"From git://127.0.0.1:9419/gitrepo",
		" * branch            0e15000cbad4194218b67db6a8f214dd116beabe -> FETCH_HEAD",
	}
	for _, size := range []int{1, 2, 7, 4096, len(data)} {
		var lines []string
		w := &lineWriter{log: func(l string) { lines = append(lines, l) }}
		for rest := data; len(rest) > 0; {
			n := min(size, len(rest))
			w.Write(rest[:n])
			rest = rest[n:]
		}
		w.flush()
		if len(w.packages) != 1 || !slices.Equal(lines, want) {
			t.Errorf("written %d bytes at a time: %d packages; lines\n%s", size, len(w.packages), strings.Join(lines, "\n"))
		}
	}
}

// Carriage returns: "\r\n" ends a line like "\n"; the text after a lone
// "\r" overwrites the line; a meter that stops without a newline leaves
// its last state; a meter that runs for ever holds no more than one
// state.
func TestCarriageReturns(t *testing.T) {
	var lines []string
	w := &lineWriter{log: func(l string) { lines = append(lines, l) }}
	w.Write([]byte("windows line\r"))
	w.Write([]byte("\nprogress 1%\rprogress 2%\r\rprogress 3%\r"))
	if len(lines) != 1 || lines[0] != "windows line" {
		t.Fatalf("lines %q", lines)
	}
	for i := range 1 << 16 {
		w.Write([]byte(fmt.Sprintf("Receiving objects: %d%% %s\r", i, strings.Repeat("x", 100))))
		if cap(w.partial) > 2*maxScanBytes {
			t.Fatalf("the line buffer grew to %d bytes", cap(w.partial))
		}
	}
	w.Write([]byte("stopped at 99%"))
	w.flush()
	if !slices.Equal(lines, []string{"windows line", "stopped at 99%"}) {
		t.Errorf("lines %q", lines)
	}
}

package nix

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"

	"github.com/nixery/nixery/internal/redact"
)

// flakeFeatures enables what flakes need for Nixery's own Nix processes
// only, whatever nix.conf says: `nix flake` and builtins.getFlake are
// experimental in every Nix so far (Debian 12's 2.8 included).
var flakeFeatures = []string{"--extra-experimental-features", "nix-command flakes"}

// maxFlakeMetadata bounds what is read of `nix flake metadata --json`:
// a few kilobytes, more for a flake with many inputs (the lock graph).
const maxFlakeMetadata = 4 << 20

// FlakeMetadata is what Nixery needs to know of a locked flake.
type FlakeMetadata struct {
	// URL is the locked flake reference ("url" in Nix's answer, which
	// is the locked one despite its name): building from it builds
	// exactly what was locked, e.g.
	// "git+file:///srv/pkgs?ref=refs%2fheads%2fmain&rev=…" or
	// "path:/srv/pkgs?lastModified=…&narHash=sha256-…".
	URL string

	// Revision is the locked commit of a git-based flake, "" otherwise.
	Revision string

	// NarHash is the hash of the flake's source tree ("sha256-…").
	NarHash string

	// Pinned is true when the flake's own flake.lock locks all of its
	// inputs (or it has none): then Revision (or NarHash) pins all that
	// its packages are made of. Otherwise Nix locked the missing inputs
	// as they are now, and may lock them otherwise the next time.
	Pinned bool

	// Locks is a digest (hex SHA-256) of the lock graph Nix used, which
	// names the inputs of an unpinned flake as they were locked.
	Locks string
}

// FlakeMetadata locks the flake reference ref with one `nix flake
// metadata --json`, run like every other Nix process (its own process
// group, stopped as a group when ctx ends or the Runner's Timeout
// passes). Nix fetches the flake's source into the store to hash it.
//
// Nix writes no lock file here (--no-write-lock-file), as
// builtins.getFlake does not either: inputs that the flake's flake.lock
// lacks are locked as they are now, for this answer only (Pinned is then
// false). A flake's nixConfig is never applied: it could name
// substituters or other settings for Nixery's Nix.
func (r *Runner) FlakeMetadata(ctx context.Context, ref string) (*FlakeMetadata, error) {
	ctx, cancel := r.bounded(ctx)
	defer cancel()
	out := &cappedBuffer{max: maxFlakeMetadata}
	args := append(append([]string{}, flakeFeatures...), "flake", "metadata", "--json",
		"--no-write-lock-file", "--option", "accept-flake-config", "false")
	args = append(append(append(args, r.offline()...), r.storeBounds()...), "--", ref)
	// A flake in git at a commit it lacks is an UnknownRevisionError.
	stderr := &lineWriter{}
	if m := flakeRevRE.FindStringSubmatch(ref); m != nil {
		stderr.sourceRev = m[1]
	}
	if err := r.runWith(ctx, out, stderr, "nix", args...); err != nil {
		return nil, err
	}
	if out.over {
		return nil, &BuildError{Err: fmt.Errorf("nix flake metadata %s: more than %d bytes of output", redact.URLs(ref), maxFlakeMetadata)}
	}
	return parseFlakeMetadata(out.data, ref, os.ReadFile)
}

// flakeRevRE finds the commit a flake reference asks for.
var flakeRevRE = regexp.MustCompile(`[?&]rev=([0-9a-f]{40})\b`)

// maxLockFile bounds what is read of a flake's flake.lock.
const maxLockFile = 16 << 20

// parseFlakeMetadata reads the answer of `nix flake metadata --json`,
// whose fields "url", "locked" (with "rev", "narHash" and "dir"), "path"
// and "locks" are the same in Nix 2.8 and in current Nix. readFile reads
// the flake's flake.lock from the store.
func parseFlakeMetadata(data []byte, ref string, readFile func(string) ([]byte, error)) (*FlakeMetadata, error) {
	var m struct {
		URL    string `json:"url"`
		Path   string `json:"path"`
		Locked struct {
			Rev     string `json:"rev"`
			NarHash string `json:"narHash"`
			Dir     string `json:"dir"`
		} `json:"locked"`
		Locks json.RawMessage `json:"locks"`
	}
	fail := func(err error) error {
		return &BuildError{Err: fmt.Errorf("nix flake metadata %s: %w", redact.URLs(ref), err)}
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fail(err)
	}
	if m.URL == "" || m.Locked.Rev == "" && m.Locked.NarHash == "" {
		return nil, fail(errors.New("the flake is locked to neither a revision nor a hash"))
	}
	var locks lockGraph
	if err := json.Unmarshal(m.Locks, &locks); err != nil {
		return nil, fail(fmt.Errorf("lock graph: %w", err))
	}
	sum := sha256.Sum256(m.Locks)
	md := &FlakeMetadata{URL: m.URL, Revision: m.Locked.Rev, NarHash: m.Locked.NarHash, Locks: hex.EncodeToString(sum[:])}
	if locks.inputs() == 0 {
		md.Pinned = true // nothing to lock
	} else if m.Path != "" {
		// The flake.lock in the flake's source, as locked, against the
		// graph Nix used: the same unless Nix had to add or change
		// something.
		file, err := readFile(filepath.Join(m.Path, filepath.FromSlash(m.Locked.Dir), "flake.lock"))
		var own lockGraph
		if err == nil && len(file) <= maxLockFile && json.Unmarshal(file, &own) == nil {
			md.Pinned = reflect.DeepEqual(own, locks)
		}
	}
	return md, nil
}

// lockGraph is a flake lock file, or the lock graph of `nix flake
// metadata`, as plain JSON values.
type lockGraph struct {
	Nodes   map[string]any `json:"nodes"`
	Root    string         `json:"root"`
	Version any            `json:"version"`
}

// inputs counts the inputs of the root node.
func (g lockGraph) inputs() int {
	root, _ := g.Nodes[g.Root].(map[string]any)
	inputs, _ := root["inputs"].(map[string]any)
	return len(inputs)
}

// cappedBuffer keeps the first max bytes written to it and notes whether
// there were more.
type cappedBuffer struct {
	data []byte
	max  int
	over bool
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if room := b.max - len(b.data); len(p) > room {
		p, b.over = p[:max(room, 0)], true
	}
	b.data = append(b.data, p...)
	return n, nil
}

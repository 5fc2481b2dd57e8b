// Package config holds Nixery's configuration and the package sources it
// can build from. Each source resolves an image tag to what the embedded
// Nix expression (package nix) needs and to its own cache identity.
package config

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Source is where the Nix package set comes from.
type Source interface {
	// Resolve says which package set the image tag selects. For a git
	// repository the tag is a branch, tag or commit; other sources
	// ignore it.
	Resolve(ctx context.Context, tag string) (Resolved, error)

	// String describes the source for humans (logs, index page).
	String() string
}

// Resolved is a package set as selected by a tag.
type Resolved struct {
	// Type and Args are the srcType and srcArgs of the embedded Nix
	// expression: ("path", "/abs/dir"), ("nixpkgs", "<channel or
	// commit>") or ("git", `{"url":…,"ref":…,"rev":…}`).
	Type, Args string

	// Identity names this package set in cache keys: the resolved commit
	// wherever one exists.
	Identity string

	// Immutable is true when Identity pins the package set for good (a
	// commit). Results from a moving source (a branch, a channel name, a
	// directory) are reused only for the cache time.
	Immutable bool

	// Revision is the resolved revision for humans ("" if none).
	Revision string
}

// UnknownRevisionError is returned when a tag names no revision of the
// source (a git repository without such a branch, tag or commit).
type UnknownRevisionError struct {
	Source, Tag string
}

func (e *UnknownRevisionError) Error() string {
	return fmt.Sprintf("%s has no branch, tag or commit named %q", e.Source, e.Tag)
}

var commitRE = regexp.MustCompile(`^[0-9a-f]{40}$`)

// PathSource is a package set in a local directory (NIXERY_PKGS_PATH).
// The tag is ignored; the directory may change at any time, so results
// are reused only for the cache time.
type PathSource struct {
	Path  string
	Label string // optional description for humans, instead of the path
}

func (s PathSource) Resolve(context.Context, string) (Resolved, error) {
	abs, err := filepath.Abs(s.Path)
	if err != nil {
		return Resolved{}, err
	}
	return Resolved{Type: "path", Args: abs, Identity: "path:" + abs}, nil
}

func (s PathSource) String() string {
	if s.Label != "" {
		return s.Label
	}
	return "local path " + s.Path
}

// ChannelSource is a nixpkgs channel, branch or commit fetched from the
// nixpkgs repository (NIXERY_CHANNEL). The tag is ignored. A full commit
// is immutable; a channel or branch name moves.
type ChannelSource struct{ Channel string }

func (s ChannelSource) Resolve(context.Context, string) (Resolved, error) {
	r := Resolved{Type: "nixpkgs", Args: s.Channel, Identity: "nixpkgs:" + s.Channel}
	if commitRE.MatchString(s.Channel) {
		r.Immutable, r.Revision = true, s.Channel
	}
	return r, nil
}

func (s ChannelSource) String() string { return "nixpkgs channel " + s.Channel }

// GitSource is a git repository holding a package set (NIXERY_PKGS_REPO).
// The image tag selects a branch, tag or full commit; "latest" means the
// repository's default branch. Branch and tag names are resolved to a
// commit with `git ls-remote`, and the commit is the cache identity; a
// resolution is reused for TTL so that warm pulls do not ask the remote.
type GitSource struct {
	Repository string
	TTL        time.Duration // how long a resolved name is reused

	mu    sync.Mutex
	cache map[string]gitResolution
}

type gitResolution struct {
	ref, rev string
	at       time.Time
}

// gitTimeout bounds one `git ls-remote`.
const gitTimeout = 30 * time.Second

func (s *GitSource) String() string { return "git repository " + s.Repository }

func (s *GitSource) Resolve(ctx context.Context, tag string) (Resolved, error) {
	if tag == "" {
		tag = "latest"
	}
	if commitRE.MatchString(tag) {
		return s.resolved(map[string]any{"url": s.Repository, "rev": tag, "allRefs": true}, tag)
	}
	res, err := s.lookup(ctx, tag)
	if err != nil {
		return Resolved{}, err
	}
	return s.resolved(map[string]any{"url": s.Repository, "ref": res.ref, "rev": res.rev}, res.rev)
}

func (s *GitSource) resolved(args map[string]any, rev string) (Resolved, error) {
	b, err := json.Marshal(args)
	if err != nil {
		return Resolved{}, err
	}
	return Resolved{Type: "git", Args: string(b), Identity: "git:" + s.Repository + "@" + rev, Immutable: true, Revision: rev}, nil
}

// lookup resolves a branch or tag name (or "latest") to a full ref and
// commit, reusing a resolution younger than TTL.
func (s *GitSource) lookup(ctx context.Context, tag string) (gitResolution, error) {
	s.mu.Lock()
	if r, ok := s.cache[tag]; ok && time.Since(r.at) < s.TTL {
		s.mu.Unlock()
		return r, nil
	}
	s.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, gitTimeout)
	defer cancel()
	patterns := []string{"refs/heads/" + tag, "refs/tags/" + tag, "refs/tags/" + tag + "^{}"}
	if tag == "latest" {
		patterns = []string{"HEAD"}
	}
	cmd := exec.CommandContext(ctx, "git", append([]string{"ls-remote", "--symref", "--", s.Repository}, patterns...)...)
	cmd.Env = append(cmd.Environ(), "GIT_TERMINAL_PROMPT=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return gitResolution{}, fmt.Errorf("git ls-remote %s: %w: %s", s.Repository, err, strings.TrimSpace(stderr.String()))
	}
	r, ok := parseLsRemote(out, tag)
	if !ok {
		return gitResolution{}, &UnknownRevisionError{Source: s.String(), Tag: tag}
	}
	r.at = time.Now()
	s.mu.Lock()
	if s.cache == nil {
		s.cache = map[string]gitResolution{}
	}
	s.cache[tag] = r
	s.mu.Unlock()
	return r, nil
}

// parseLsRemote picks the ref and commit for tag from `git ls-remote
// --symref` output. A branch wins over a tag of the same name (as git's
// own lookup order has it); an annotated tag is peeled to its commit.
func parseLsRemote(out []byte, tag string) (gitResolution, bool) {
	refs := map[string]string{}
	headRef := ""
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "ref: "); ok {
			if target, name, ok := strings.Cut(rest, "\t"); ok && name == "HEAD" {
				headRef = target
			}
			continue
		}
		if rev, name, ok := strings.Cut(line, "\t"); ok {
			refs[name] = rev
		}
	}
	if tag == "latest" {
		if headRef == "" || refs["HEAD"] == "" {
			return gitResolution{}, false
		}
		return gitResolution{ref: headRef, rev: refs["HEAD"]}, true
	}
	if rev := refs["refs/heads/"+tag]; rev != "" {
		return gitResolution{ref: "refs/heads/" + tag, rev: rev}, true
	}
	if rev := refs["refs/tags/"+tag+"^{}"]; rev != "" {
		return gitResolution{ref: "refs/tags/" + tag, rev: rev}, true
	}
	if rev := refs["refs/tags/"+tag]; rev != "" {
		return gitResolution{ref: "refs/tags/" + tag, rev: rev}, true
	}
	return gitResolution{}, false
}

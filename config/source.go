// Package config holds Nixery's configuration and the package sources it
// can build from. Each source resolves an image tag to what the embedded
// Nix expression (package nix) needs and to its own cache identity.
package config

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"

	"github.com/nixery/nixery/redact"
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
	return fmt.Sprintf("%s has no branch, tag or commit named %q", redact.URLs(e.Source), e.Tag)
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

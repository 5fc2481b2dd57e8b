// Package source holds the package sources Nixery can build from (a
// nixpkgs channel, a git repository, a local path, a flake). Each source
// resolves an image tag to what the embedded Nix expression (package
// nix) needs and to its own cache identity; the git and flake sources
// run git and Nix for it, within bounds (package config only reads the
// settings that choose one).
package source

import (
	"context"
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/nixery/nixery/internal/nix"
	"github.com/nixery/nixery/internal/redact"
)

// Source is where the Nix package set comes from.
type Source interface {
	// Resolve says which package set the image tag selects: for a git
	// repository a branch, tag or commit; for nixpkgs a channel or
	// commit; for a local path only "latest". A tag that selects nothing
	// is an *nix.UnknownRevisionError (404 MANIFEST_UNKNOWN for the
	// registry), found without building anything.
	Resolve(ctx context.Context, tag string) (Resolved, error)

	// String describes the source for humans (logs, index page).
	String() string
}

// Resolved is a package set as selected by a tag.
type Resolved struct {
	// Type and Args are the srcType and srcArgs of the embedded Nix
	// expression: ("path", "/abs/dir"), ("nixpkgs", "<channel or
	// commit>"), ("git", `{"url":…,"ref":…,"rev":…}`) or ("flake",
	// "<locked flake reference>").
	Type, Args string

	// Identity names this package set in cache keys: the resolved commit
	// wherever one exists (for a flake without one, its content hash).
	Identity string

	// Immutable is true when Identity pins the package set for good (a
	// commit; a flake's locked revision or content hash when its lock
	// file locks every input). Results from a moving source (a branch, a
	// channel name, a directory) are reused only for the cache time.
	Immutable bool

	// Revision is the resolved revision for humans ("" if none).
	Revision string
}

// URI says where the package set comes from, without credentials, for
// documents that name it (an image's SBOMs and provenance): "git+" and
// the repository's URL (git+file:// for a directory), the locked flake
// reference, the nixpkgs tarball Nix fetches; "" for a local directory,
// whose path is the server's own business.
func (r Resolved) URI() string {
	switch r.Type {
	case "git":
		var args struct {
			URL string `json:"url"`
		}
		if json.Unmarshal([]byte(r.Args), &args) != nil || args.URL == "" {
			return ""
		}
		u := redact.WithoutUserinfo(args.URL)
		switch {
		case strings.HasPrefix(u, "/"):
			return "git+file://" + u
		case strings.HasPrefix(u, "git+"):
			return u
		}
		return "git+" + u
	case "flake":
		return redact.WithoutUserinfo(r.Args)
	case "nixpkgs":
		return "https://github.com/NixOS/nixpkgs/archive/" + r.Args + ".tar.gz" // as load.nix fetches it
	}
	return ""
}

var commitRE = regexp.MustCompile(`^[0-9a-f]{40}$`)

// latest reports whether tag selects a source's default package set.
func latest(tag string) bool { return tag == "" || tag == "latest" }

// PathSource is a package set in a local directory (NIXERY_PKGS_PATH).
// A directory has one state, the one it is in, so the only tag is
// "latest"; the directory may change at any time, so results are reused
// only for the cache time.
type PathSource struct {
	Path  string
	Label string // optional description for humans, instead of the path
}

func (s PathSource) Resolve(_ context.Context, tag string) (Resolved, error) {
	if !latest(tag) {
		return Resolved{}, &nix.UnknownRevisionError{Source: s.String(), Tag: tag, Reason: "a local package set has only the tag latest"}
	}
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

// ChannelSource is nixpkgs, fetched by Nix from the nixpkgs repository
// (NIXERY_CHANNEL names a channel, branch or commit). The tag "latest"
// selects Channel; any other tag selects a nixpkgs channel by name
// (shell/git:nixos-24.11) or a full commit (pinned images). A commit is
// immutable; a channel or branch name moves.
//
// Nixery cannot ask GitHub which names exist without network access, and
// must not run Nix for every tag a client makes up, so a tag is checked
// against the grammar of nixpkgs' channel names (channelRE): any other
// tag names nothing, at once.
type ChannelSource struct{ Channel string }

// channelRE is the grammar of nixpkgs' channels, the branches that
// https://channels.nixos.org publishes: nixos-YY.MM and its -small
// variant, nixos-unstable(-small), nixpkgs-unstable and the Darwin
// release channels nixpkgs-YY.MM-darwin.
var channelRE = regexp.MustCompile(`^(nixos-([0-9]{2}\.(0[1-9]|1[0-2])|unstable)(-small)?|nixpkgs-unstable|nixpkgs-[0-9]{2}\.(0[1-9]|1[0-2])-darwin)$`)

// channelTags says what ChannelSource's tags are, for errors.
const channelTags = "a tag is latest, a nixpkgs channel (nixos-24.11, nixos-24.11-small, nixos-unstable, nixos-unstable-small, nixpkgs-unstable, nixpkgs-24.11-darwin, …) or a full 40-digit commit"

func (s ChannelSource) Resolve(_ context.Context, tag string) (Resolved, error) {
	name := s.Channel
	switch {
	case latest(tag):
	case commitRE.MatchString(tag), channelRE.MatchString(tag):
		name = tag
	default:
		return Resolved{}, &nix.UnknownRevisionError{Source: s.String(), Tag: tag, Reason: channelTags}
	}
	r := Resolved{Type: "nixpkgs", Args: name, Identity: "nixpkgs:" + name}
	if commitRE.MatchString(name) {
		r.Immutable, r.Revision = true, name
	}
	return r, nil
}

func (s ChannelSource) String() string { return "nixpkgs channel " + s.Channel }

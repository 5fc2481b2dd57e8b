// Package config holds Nixery's configuration and the package sources it
// can build from. Each source knows how to describe itself to the embedded
// Nix expression (see package nix) and what its cache identity is.
package config

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
)

// Source is where the Nix package set comes from.
//
// The image tag is passed to every method because for some sources (a git
// repository) the tag selects the revision of the package set.
type Source interface {
	// Render returns the source type and argument understood by the
	// embedded Nix expression: ("path", "/abs/dir"), ("nixpkgs",
	// "<channel or commit>") or ("git", `{"url":…,"ref":…}`).
	Render(tag string) (srcType, srcArgs string, err error)

	// Identity is a string that names the package set selected by tag,
	// for use in cache keys. Two calls that return the same identity
	// must describe the same package set at the time of the call.
	Identity(tag string) string

	// String describes the source for humans (logs, index page).
	String() string
}

// PathSource is a package set in a local directory (NIXERY_PKGS_PATH).
// The tag is ignored.
type PathSource struct {
	Path  string
	Label string // optional description for humans, instead of the path
}

func (s PathSource) Render(string) (string, string, error) {
	abs, err := filepath.Abs(s.Path)
	if err != nil {
		return "", "", err
	}
	return "path", abs, nil
}

func (s PathSource) Identity(string) string { return "path:" + s.Path }

func (s PathSource) String() string {
	if s.Label != "" {
		return s.Label
	}
	return "local path " + s.Path
}

// ChannelSource is a nixpkgs channel, branch or commit fetched from the
// nixpkgs repository (NIXERY_CHANNEL). The tag is ignored.
type ChannelSource struct{ Channel string }

func (s ChannelSource) Render(string) (string, string, error) {
	return "nixpkgs", s.Channel, nil
}

func (s ChannelSource) Identity(string) string { return "nixpkgs:" + s.Channel }
func (s ChannelSource) String() string         { return "nixpkgs channel " + s.Channel }

// GitSource is a git repository holding a package set (NIXERY_PKGS_REPO).
// The image tag selects a branch, tag or full commit; "latest" means the
// repository's default branch.
type GitSource struct{ Repository string }

var commitRE = regexp.MustCompile(`^[0-9a-f]{40}$`)

func (s GitSource) Render(tag string) (string, string, error) {
	args := map[string]string{"url": s.Repository}
	switch {
	case tag == "" || tag == "latest":
		// builtins.fetchGit without ref uses the default branch (HEAD).
	case commitRE.MatchString(tag):
		args["rev"] = tag
	default:
		args["ref"] = tag
	}
	b, err := json.Marshal(args)
	if err != nil {
		return "", "", err
	}
	return "git", string(b), nil
}

func (s GitSource) Identity(tag string) string { return "git:" + s.Repository + "@" + tag }
func (s GitSource) String() string             { return "git repository " + s.Repository }

// Describe gives a one-line description of a source, or says that none
// is configured.
func Describe(s Source) string {
	if s == nil {
		return "no package source"
	}
	return fmt.Sprint(s)
}

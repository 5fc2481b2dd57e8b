// Package image turns an image name and tag into a build request.
//
// The name is the recipe: every path component is a Nix attribute path
// ("git", "xorg.xev"), and the leading components may be meta-packages:
//
//	shell    adds bashInteractive, coreutils, moreutils and nano
//	arm64    builds for aarch64-linux and marks the image arm64
//	nonroot  runs the image as the user nonroot (uid and gid 65532)
//
// A component <attr>.withpackages.<p1>.<p2>… is a language environment:
// <attr>.withPackages called with the packages named after it
// (python3.withpackages.numpy.requests), resolved by package nix. The
// same packages in any order are the same environment, so they are
// sorted and deduplicated too.
//
// The same set of packages in any order is the same image, so packages are
// sorted and deduplicated. Names are validated against the OCI distribution
// spec grammar before anything else sees them.
package image

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/nixery/nixery/internal/fault"
)

// Arch is an image architecture, as Nix and as OCI name it.
type Arch struct {
	System string // Nix system, e.g. "x86_64-linux"
	OCI    string // OCI/Go architecture, e.g. "amd64"
}

var (
	AMD64 = Arch{System: "x86_64-linux", OCI: "amd64"}
	ARM64 = Arch{System: "aarch64-linux", OCI: "arm64"}
)

// ShellPackages are the packages the "shell" meta-package adds.
var ShellPackages = []string{"bashInteractive", "coreutils", "moreutils", "nano"}

// Request is everything that selects one image.
type Request struct {
	Name     string   // the repository name as requested
	Tag      string   // the tag (selects a revision for git sources)
	Packages []string // sorted, deduplicated attribute paths (meta-packages expanded)
	Arch     Arch
	// NonRoot asks for an image that runs as the unprivileged user
	// nonroot, uid and gid 65532 (the "nonroot" meta-package; the
	// customisation layer adds the user, see archive.Setup).
	NonRoot bool
}

// Options are the choices of r, besides its packages and architecture,
// that make a different image: nil for the default (root) image, so that
// cache keys of default images stay what they were before options
// existed.
func (r *Request) Options() map[string]string {
	if !r.NonRoot {
		return nil
	}
	return map[string]string{"user": "nonroot"}
}

// Error is a client error in an image name or tag. Code is the
// distribution-spec error code the registry should answer with:
// NAME_INVALID for a name (400), MANIFEST_UNKNOWN for a tag (404).
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Message }

// Fault: an invalid tag names no manifest; anything else is invalid.
func (e *Error) Fault() fault.Fault {
	if e.Code == "MANIFEST_UNKNOWN" {
		return fault.Fault{Kind: fault.NotFound}
	}
	return fault.Fault{Kind: fault.Invalid}
}

// Grammar from the distribution spec, "Pulling manifests":
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pulling-manifests
var (
	componentRE = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*$`)
	tagRE       = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
)

// maxNameLength bounds a repository name; many clients reject longer ones
// and a Nix attribute list has no use for more.
const maxNameLength = 255

// ValidName reports whether name is a valid repository name.
func ValidName(name string) bool {
	if name == "" || len(name) > maxNameLength {
		return false
	}
	for _, c := range strings.Split(name, "/") {
		if !componentRE.MatchString(c) {
			return false
		}
	}
	return true
}

// ValidTag reports whether tag is a valid tag. A tag may select a git
// reference (NIXERY_PKGS_REPO), so on top of the distribution spec's
// grammar (which already forbids a leading '-' or '.') it must be a valid
// git ref name: no "..", no trailing '.' and no ".lock" suffix.
func ValidTag(tag string) bool {
	return tagRE.MatchString(tag) && !strings.Contains(tag, "..") &&
		!strings.HasSuffix(tag, ".") && !strings.HasSuffix(tag, ".lock")
}

// Parse validates name and tag and returns the build request they select.
func Parse(name, tag string) (*Request, error) {
	if !ValidName(name) {
		return nil, &Error{Code: "NAME_INVALID", Message: fmt.Sprintf("invalid repository name %q: each path component must match [a-z0-9]+((.|_|__|-+)[a-z0-9]+)*", name)}
	}
	if !ValidTag(tag) {
		// An invalid tag is a bad reference, not a bad name: the name is
		// fine. The spec's codes for a reference are MANIFEST_INVALID
		// (a pushed manifest body is wrong) and MANIFEST_UNKNOWN (no
		// manifest under this reference); distribution's TAG_INVALID
		// likewise means a pushed manifest's tag disagrees with the URL.
		// This is a pull, and a tag outside the grammar can never be
		// tagged, so no manifest is or will be known under it: 404
		// MANIFEST_UNKNOWN, as for a tag that names nothing, which is
		// also what clients report as "manifest unknown" rather than as
		// a broken repository name.
		// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#error-codes
		return nil, &Error{Code: "MANIFEST_UNKNOWN", Message: fmt.Sprintf("invalid tag %q: a tag must match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127} and be a valid git ref name (no \"..\", no trailing \".\" or \".lock\")", tag)}
	}
	if strings.HasPrefix(tag, ReservedTagPrefix) {
		return nil, &Error{Code: "MANIFEST_UNKNOWN", Message: fmt.Sprintf("tag %q names no artifact of this registry: tags that begin %q are reserved for the artifacts of a manifest (the OCI referrers tag schema, cosign's .sig and .att) and select no package set", tag, ReservedTagPrefix)}
	}
	components := strings.Split(name, "/")
	arch, nonRoot, packages := metaPackages(components)
	for i, p := range packages {
		// Attribute paths are dot-separated identifiers; "a..b" or a
		// trailing dot can never name an attribute.
		for _, part := range strings.Split(p, ".") {
			if part == "" {
				return nil, &Error{Code: "NAME_INVALID", Message: fmt.Sprintf("invalid package %q: empty attribute name", p)}
			}
		}
		env, err := environment(p)
		if err != nil {
			return nil, err
		}
		packages[i] = env
	}
	slices.Sort(packages)
	packages = slices.Compact(packages)
	if len(packages) == 0 {
		return nil, &Error{Code: "NAME_INVALID", Message: fmt.Sprintf("image name %q names no packages: add at least one package after the meta-packages", name)}
	}
	return &Request{Name: name, Tag: tag, Packages: packages, Arch: arch, NonRoot: nonRoot}, nil
}

// metaPackages expands the meta-packages at the start of the name (in any
// order, as the original Nixery does) and returns the architecture,
// whether the image runs as nonroot, and the package list.
func metaPackages(components []string) (arch Arch, nonRoot bool, out []string) {
	arch = AMD64
	i := 0
	for ; i < len(components); i++ {
		switch components[i] {
		case "shell":
			out = append(out, ShellPackages...)
			continue
		case "arm64":
			arch = ARM64
			continue
		case "nonroot":
			nonRoot = true
			continue
		}
		break
	}
	return arch, nonRoot, append(out, components[i:]...)
}

// ReservedTagPrefix begins the tags of the OCI referrers tag schema
// ("sha256-<hex>", the referrers of the manifest sha256:<hex>) and of
// cosign's signatures and attestations ("sha256-<hex>.sig", ".att",
// ".sbom"). Every tag that begins with it is reserved: Parse refuses it,
// so it never reaches a package source as a git revision.
const ReservedTagPrefix = "sha256-"

// ReferrersTag reads a tag of the referrers tag schema: the manifest it
// names the artifacts of, and the suffix after its hex ("" for the
// schema's own tag, "sig", "att", "sbom" for cosign's); ok is false for
// any other tag.
func ReferrersTag(tag string) (subject digest.Digest, suffix string, ok bool) {
	rest, found := strings.CutPrefix(tag, ReservedTagPrefix)
	if !found || len(rest) < 64 {
		return "", "", false
	}
	hex, suffix := rest[:64], rest[64:]
	if suffix != "" {
		var dot bool
		if suffix, dot = strings.CutPrefix(suffix, "."); !dot || suffix == "" {
			return "", "", false
		}
	}
	subject = digest.NewDigestFromEncoded(digest.SHA256, hex)
	if subject.Validate() != nil {
		return "", "", false
	}
	return subject, suffix, true
}

// ParseRef parses a reference "<name>[:<tag>]" as people and the command
// line write it (the tag defaults to "latest") into a build request, with
// the registry's validation.
func ParseRef(ref string) (*Request, error) {
	name, tag := ref, "latest"
	if i := strings.LastIndexByte(ref, ':'); i >= 0 {
		name, tag = ref[:i], ref[i+1:]
	}
	return Parse(name, tag)
}

// Ref formats the request back into "<name>[:<tag>]", without ":latest".
func (r *Request) Ref() string {
	if r.Tag == "latest" {
		return r.Name
	}
	return r.Name + ":" + r.Tag
}

// Replacing returns the reference (as Ref spells it) of the image whose
// name has new for every component that is old: the image a suggestion
// for the unknown package old selects. ok is false if no component is
// old (a package inside a language environment, a meta-package) or the
// name that results is invalid.
func (r *Request) Replacing(old, new string) (ref string, ok bool) {
	components := strings.Split(r.Name, "/")
	for i, c := range components {
		if c == old {
			components[i], ok = new, true
		}
	}
	if !ok {
		return "", false
	}
	req, err := Parse(strings.Join(components, "/"), r.Tag)
	if err != nil {
		return "", false
	}
	return req.Ref(), true
}

// WithPackages is the attribute name that makes a component a language
// environment, as in python3.withpackages.numpy. Names are lower case
// (the distribution spec's grammar); package nix finds nixpkgs'
// withPackages ignoring case, like every attribute.
const WithPackages = "withpackages"

// environment checks a language environment <attr>.withpackages.<p1>…
// and returns it with its packages sorted and deduplicated; any other
// attribute path is returned as it is.
func environment(p string) (string, error) {
	parts := strings.Split(p, ".")
	i := slices.Index(parts, WithPackages)
	if i < 0 {
		return p, nil
	}
	invalid := func(why string) error {
		return &Error{Code: "NAME_INVALID", Message: fmt.Sprintf("invalid package %q: %s, as in python3.withpackages.numpy.requests", p, why)}
	}
	switch {
	case i == 0:
		return "", invalid("withpackages follows the attribute whose withPackages it calls")
	case i == len(parts)-1:
		return "", invalid("name at least one package after withpackages")
	case slices.Contains(parts[i+1:], WithPackages):
		return "", invalid("withpackages may appear once")
	}
	list := slices.Clone(parts[i+1:])
	slices.Sort(list)
	list = slices.Compact(list)
	return strings.Join(append(parts[:i+1], list...), "."), nil
}

// Package attest writes what an image is made of and how it was made, as
// documents that supply-chain tools read: an SBOM in SPDX 2.3 JSON
// (SPDX) and in CycloneDX 1.6 JSON (CycloneDX), and SLSA provenance v1 in
// an in-toto statement (Provenance); Statement wraps any of them in an
// in-toto statement about the image, as cosign attestations carry them.
//
// Everything comes from what Nix reports at build time (an Image value):
// the closure's store paths with their NAR hashes, sizes and references,
// and the requested packages' meta. Nothing scans layers.
//
// The documents are pure functions of the Image: the same Image gives the
// same bytes on any server, at any time. Lists are sorted (the closure by
// store path, references by store path; the requested packages keep their
// order, which is the image name's), and no document holds the time it
// was written. Where a format requires a time (SPDX's creationInfo.created)
// it is Source.Time, the package source's commit time, if the caller knows
// it, else Epoch, the time every image config says it was created.
//
// Identifiers are derived from the manifest digest, so that two servers
// name the same image's documents alike: the SPDX documentNamespace, the
// CycloneDX serialNumber (a name-based UUID, version 5) and the
// provenance's invocationId.
package attest

import (
	"bytes"
	"crypto/sha1"
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// Image is one image, as the documents describe it.
type Image struct {
	// Name is the image name as pulled ("shell/git"), Tag its tag
	// ("latest"), Arch its architecture (OCI: "amd64", "arm64").
	Name, Tag, Arch string

	// Manifest is the digest of the image manifest: the documents'
	// subject. ManifestMediaType is its media type (OCI or Docker).
	Manifest          digest.Digest
	ManifestMediaType string

	Source   Source
	Packages []Package // the requested packages, in request order
	Closure  []Path    // every store path of the image (any order)
	Builder  Builder
}

// Source is the package set the image was built from. Every field is
// published: none may hold a credential.
type Source struct {
	// Type is the kind of source: "git", "nixpkgs", "path" or "flake".
	Type string
	// URI says where the package set comes from, with no credentials:
	// "git+https://host/repo" for a git repository, a flake reference;
	// "" when there is none worth publishing (a local directory).
	URI string
	// Description is for people: "nixpkgs channel nixos-24.11".
	Description string
	// Identity names the package set in Nixery's caches; Revision is the
	// commit it was built at ("" if none). A revision of 40 hex digits
	// is a git commit.
	Identity, Revision string
	// Time, if known, is the revision's commit time; it dates the SPDX
	// document (else Epoch).
	Time time.Time
}

// Package is one requested package, with its meta as Nix evaluated it.
// Only Attribute and Outputs are always known.
type Package struct {
	Attribute string // as requested: "git", "python3.withpackages.numpy"
	PName     string // meta's pname; "": the SBOMs read name and version from the store path
	Version   string
	Licenses  []License // meta.license: all of them apply
	Homepage  string    // meta.homepage (the first one)
	DrvPath   string    // the derivation, /nix/store/…drv
	Outputs   []string  // its output paths in the image
}

// License is one licence of meta.license: nixpkgs' spdxId, else its
// short name, and its full name.
type License struct {
	SPDX      string // an SPDX licence identifier ("MIT", "GPL-2.0-or-later"), or ""
	ShortName string // nixpkgs' shortName ("unfree"), or ""
	FullName  string // "MIT License", or ""
}

// Path is one store path of the closure.
type Path struct {
	Path       string        // /nix/store/<hash>-<name>
	NarHash    digest.Digest // sha256 of its NAR serialisation, "sha256:<hex>"
	NarSize    int64         // size of the NAR
	References []string      // the store paths it refers to (itself excluded)
}

// Builder is the Nixery instance that built the image.
type Builder struct {
	ID      string // the instance: its public URL ("https://nixery.example.com")
	Version string // Nixery's version
}

// Epoch dates documents whose source has no known time: the time every
// image config says it was created (package manifest).
var Epoch = time.Date(1970, 1, 1, 0, 0, 1, 0, time.UTC)

// Predicate types of the in-toto statements (Statement).
const (
	PredicateSPDX       = "https://spdx.dev/Document"
	PredicateCycloneDX  = "https://cyclonedx.org/bom"
	PredicateProvenance = "https://slsa.dev/provenance/v1"
)

// BuildType is the SLSA buildType of Nixery's provenance; docs/image-
// contents.md says what its parameters mean.
const BuildType = "https://github.com/nixery/nixery/blob/main/docs/image-contents.md#build-type-v1"

// Media types of the documents, as artifact types of OCI artifacts.
const (
	MediaTypeSPDX      = "application/spdx+json"
	MediaTypeCycloneDX = "application/vnd.cyclonedx+json"
	MediaTypeInToto    = "application/vnd.in-toto+json"
)

// component is one store path as the SBOMs list it: the path with what
// is known of its package.
type component struct {
	Path
	hash     string   // <hash>
	name     string   // pname, else the name parsed from the path
	version  string   // version, else the version parsed from the path
	pkg      *Package // the requested package it is an output of, or nil
	licenses []License
	homepage string
}

// components is the closure of a valid image (check), sorted by store
// path, each path with the meta of the requested package it is an output
// of (the first one, if several requested packages share an output), else
// a name and version parsed from its name. References are sorted, without
// duplicates, and only to paths of the closure.
func components(img Image) ([]component, error) {
	if err := check(img); err != nil {
		return nil, err
	}
	byOutput := map[string]*Package{}
	for i := range img.Packages {
		for _, o := range img.Packages[i].Outputs {
			if _, ok := byOutput[o]; !ok {
				byOutput[o] = &img.Packages[i]
			}
		}
	}
	in := map[string]bool{}
	for _, p := range img.Closure {
		in[p.Path] = true
	}
	out := make([]component, 0, len(img.Closure))
	for _, p := range img.Closure {
		base := path.Base(p.Path)
		hash, rest, ok := strings.Cut(base, "-")
		if !ok || !idstringRE.MatchString(hash) || rest == "" || !strings.HasPrefix(p.Path, "/") {
			return nil, fmt.Errorf("not a store path: %q", p.Path)
		}
		if p.NarHash != "" {
			if err := p.NarHash.Validate(); err != nil || p.NarHash.Algorithm() != digest.SHA256 {
				return nil, fmt.Errorf("%s: NAR hash %q is not a sha256 digest", p.Path, p.NarHash)
			}
		}
		c := component{hash: hash}
		c.Path = p
		c.References = nil
		for _, r := range p.References {
			if r != p.Path && in[r] {
				c.References = append(c.References, r)
			}
		}
		slices.Sort(c.References)
		c.References = slices.Compact(c.References)
		c.name, c.version = ParseName(rest)
		if pkg := byOutput[p.Path]; pkg != nil {
			c.pkg = pkg
			if pkg.PName != "" {
				c.name, c.version = pkg.PName, pkg.Version
			}
			c.licenses, c.homepage = pkg.Licenses, pkg.Homepage
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b component) int { return strings.Compare(a.Path.Path, b.Path.Path) })
	for i := 1; i < len(out); i++ {
		if out[i].Path.Path == out[i-1].Path.Path {
			return nil, fmt.Errorf("store path %s twice in the closure", out[i].Path.Path)
		}
	}
	return out, nil
}

// ParseName splits a store path's name (without its hash) into a package
// name and a version as Nix's builtins.parseDrvName does: the version
// starts after the first dash that a character other than a letter
// follows ("python3.11-numpy-1.26.4": "python3.11-numpy", "1.26.4";
// "bootstrap-busybox": no version).
func ParseName(s string) (name, version string) {
	for i := 0; i+1 < len(s); i++ {
		if s[i] == '-' && !isLetter(s[i+1]) {
			return s[:i], s[i+1:]
		}
	}
	return s, ""
}

func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

// PURL is the package URL of a Nix package, as sbomnix writes it:
// pkg:nix/<name>@<version>, each part percent-encoded as the purl
// specification asks (everything but letters, digits and ".-_~").
func PURL(name, version string) string {
	s := "pkg:nix/" + purlEscape(name)
	if version != "" {
		s += "@" + purlEscape(version)
	}
	return s
}

func purlEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isLetter(c) || '0' <= c && c <= '9' || strings.IndexByte(".-_~", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// check reports what an Image must have for any document.
func check(img Image) error {
	if img.Name == "" {
		return fmt.Errorf("image without a name")
	}
	if err := img.Manifest.Validate(); err != nil || img.Manifest.Algorithm() != digest.SHA256 {
		return fmt.Errorf("image %s: manifest digest %q is not a sha256 digest", img.Name, img.Manifest)
	}
	return nil
}

// uuid5 is the name-based UUID (RFC 9562 version 5, SHA-1) of name in
// the URL namespace: the same name, the same UUID.
func uuid5(name string) string {
	// The URL namespace, 6ba7b811-9dad-11d1-80b4-00c04fd430c8.
	ns := []byte{0x6b, 0xa7, 0xb8, 0x11, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8}
	h := sha1.New()
	h.Write(ns)
	h.Write([]byte(name))
	u := h.Sum(nil)[:16]
	u[6] = u[6]&0x0f | 0x50 // version 5
	u[8] = u[8]&0x3f | 0x80 // the RFC's variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// created is the time that dates a document (see the package comment).
func created(img Image) time.Time {
	if img.Source.Time.IsZero() {
		return Epoch
	}
	return img.Source.Time.UTC().Truncate(time.Second)
}

// marshal encodes a document as compact JSON, without HTML escapes
// (documents are no HTML) and without a final newline.
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

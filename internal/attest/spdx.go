package attest

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/github/go-spdx/v2/spdxexp/spdxlicenses"
)

// The SPDX 2.3 JSON document (https://spdx.github.io/spdx-spec/v2.3/),
// the fields Nixery writes, in the order it writes them.
type spdxDocument struct {
	SPDXVersion       string             `json:"spdxVersion"`
	DataLicense       string             `json:"dataLicense"`
	SPDXID            string             `json:"SPDXID"`
	Name              string             `json:"name"`
	DocumentNamespace string             `json:"documentNamespace"`
	Comment           string             `json:"comment,omitempty"`
	CreationInfo      spdxCreationInfo   `json:"creationInfo"`
	Packages          []spdxPackage      `json:"packages"`
	Relationships     []spdxRelationship `json:"relationships"`
	ExtractedLicenses []spdxExtracted    `json:"hasExtractedLicensingInfos,omitempty"`
}

type spdxCreationInfo struct {
	Created            string   `json:"created"`
	Creators           []string `json:"creators"`
	LicenseListVersion string   `json:"licenseListVersion,omitempty"`
	Comment            string   `json:"comment,omitempty"`
}

type spdxPackage struct {
	Name             string            `json:"name"`
	SPDXID           string            `json:"SPDXID"`
	VersionInfo      string            `json:"versionInfo,omitempty"`
	PackageFileName  string            `json:"packageFileName,omitempty"`
	DownloadLocation string            `json:"downloadLocation"`
	FilesAnalyzed    bool              `json:"filesAnalyzed"`
	Checksums        []spdxChecksum    `json:"checksums,omitempty"`
	Homepage         string            `json:"homepage,omitempty"`
	SourceInfo       string            `json:"sourceInfo,omitempty"`
	LicenseConcluded string            `json:"licenseConcluded"`
	LicenseDeclared  string            `json:"licenseDeclared"`
	CopyrightText    string            `json:"copyrightText"`
	Comment          string            `json:"comment,omitempty"`
	ExternalRefs     []spdxExternalRef `json:"externalRefs,omitempty"`
	Purpose          string            `json:"primaryPackagePurpose,omitempty"`
}

type spdxChecksum struct {
	Algorithm string `json:"algorithm"`
	Value     string `json:"checksumValue"`
}

type spdxExternalRef struct {
	Category string `json:"referenceCategory"`
	Type     string `json:"referenceType"`
	Locator  string `json:"referenceLocator"`
}

type spdxRelationship struct {
	Element string `json:"spdxElementId"`
	Type    string `json:"relationshipType"`
	Related string `json:"relatedSpdxElement"`
}

type spdxExtracted struct {
	LicenseID     string `json:"licenseId"`
	ExtractedText string `json:"extractedText"`
	Name          string `json:"name,omitempty"`
}

// spdxImageID is the SPDX identifier of the image's own package.
const spdxImageID = "SPDXRef-Image"

// SPDX is the image's SBOM as an SPDX 2.3 JSON document.
//
// The document DESCRIBES a package of the image (primary purpose
// CONTAINER, version its manifest digest), which
// CONTAINS one package per store path of the closure. A store path's
// package has its package name and version (meta's pname and version
// for the requested packages, else parsed from the store path's name), the
// store path as packageFileName, the SHA-256 of its NAR serialisation
// as its checksum, meta.license as licenseDeclared and licenseConcluded
// (NOASSERTION without meta), meta.homepage, a purl pkg:nix/<name>@<version>,
// and DEPENDS_ON each path it refers to. Licences without an SPDX
// identifier are LicenseRef-<short name>, explained in
// hasExtractedLicensingInfos. The package source and its revision are the
// image package's sourceInfo and the document's comment.
func SPDX(img Image) ([]byte, error) {
	comps, err := components(img)
	if err != nil {
		return nil, err
	}
	source := sourceText(img.Source)
	doc := spdxDocument{
		SPDXVersion:       "SPDX-2.3",
		DataLicense:       "CC0-1.0",
		SPDXID:            "SPDXRef-DOCUMENT",
		Name:              img.Name + "@" + img.Manifest.String(),
		DocumentNamespace: "https://github.com/nixery/nixery/spdx/" + url.PathEscape(img.Name) + "/" + img.Manifest.Encoded(),
		Comment:           fmt.Sprintf("The image %s (manifest %s), built by Nix from %s.", img.Name, img.Manifest, source),
		CreationInfo: spdxCreationInfo{
			Created:            created(img).Format(time.RFC3339),
			Creators:           []string{"Tool: nixery-" + orNone(img.Builder.Version)},
			LicenseListVersion: listVersion(),
			Comment:            "Made from what Nix reported at build time; checksums are SHA-256 hashes of the store paths' NAR serialisations.",
		},
	}
	imagePkg := spdxPackage{
		Name:             img.Name,
		SPDXID:           spdxImageID,
		VersionInfo:      img.Manifest.String(),
		DownloadLocation: "NOASSERTION",
		Checksums:        []spdxChecksum{{Algorithm: "SHA256", Value: img.Manifest.Encoded()}},
		SourceInfo:       "built by Nix from " + source,
		LicenseConcluded: "NOASSERTION",
		LicenseDeclared:  "NOASSERTION",
		CopyrightText:    "NOASSERTION",
		Comment:          imageComment(img),
		Purpose:          "CONTAINER",
	}
	doc.Packages = append(make([]spdxPackage, 0, len(comps)+1), imagePkg)
	doc.Relationships = []spdxRelationship{{Element: doc.SPDXID, Type: "DESCRIBES", Related: spdxImageID}}
	ids := make(map[string]string, len(comps))
	for _, c := range comps {
		ids[c.Path.Path] = "SPDXRef-StorePath-" + c.hash
	}
	extracted := map[string]License{}
	for _, c := range comps {
		p := spdxPackage{
			Name:             c.name,
			SPDXID:           ids[c.Path.Path],
			VersionInfo:      c.version,
			PackageFileName:  c.Path.Path,
			DownloadLocation: "NOASSERTION",
			Homepage:         c.homepage,
			LicenseConcluded: expression(c.licenses),
			LicenseDeclared:  expression(c.licenses),
			CopyrightText:    "NOASSERTION",
			ExternalRefs:     []spdxExternalRef{{Category: "PACKAGE-MANAGER", Type: "purl", Locator: PURL(c.name, c.version)}},
			Purpose:          "LIBRARY",
		}
		if c.NarHash != "" {
			p.Checksums = []spdxChecksum{{Algorithm: "SHA256", Value: c.NarHash.Encoded()}}
		}
		comment := []string{fmt.Sprintf("Nix store path %s, NAR size %d bytes", c.Path.Path, c.NarSize)}
		if c.pkg != nil {
			p.Purpose = "APPLICATION"
			comment = append(comment, "requested as "+c.pkg.Attribute)
			if c.pkg.DrvPath != "" {
				comment = append(comment, "derivation "+c.pkg.DrvPath)
			}
		}
		p.Comment = strings.Join(comment, "; ") + "."
		for _, l := range c.licenses {
			if id, ref := spdxID(l); ref {
				if _, ok := extracted[id]; !ok {
					extracted[id] = l
				}
			}
		}
		doc.Packages = append(doc.Packages, p)
		doc.Relationships = append(doc.Relationships, spdxRelationship{Element: spdxImageID, Type: "CONTAINS", Related: p.SPDXID})
	}
	for _, c := range comps {
		for _, r := range c.References {
			doc.Relationships = append(doc.Relationships, spdxRelationship{Element: ids[c.Path.Path], Type: "DEPENDS_ON", Related: ids[r]})
		}
	}
	for _, id := range sortedKeys(extracted) {
		l := extracted[id]
		text := licenseName(l)
		if text == "" {
			text = "NOASSERTION"
		}
		doc.ExtractedLicenses = append(doc.ExtractedLicenses, spdxExtracted{
			LicenseID:     id,
			ExtractedText: "The licence named \"" + text + "\" in the package's Nix meta.license; Nix gives no text.",
			Name:          text,
		})
	}
	return marshal(doc)
}

// sourceText names a package source in a sentence.
func sourceText(s Source) string {
	text := s.Description
	if text == "" {
		text = s.URI
	}
	if text == "" {
		text = s.Type + " package set"
	}
	if s.Revision != "" {
		text += " at revision " + s.Revision
	}
	return text
}

// imageComment describes the image's name, tag and architecture.
func imageComment(img Image) string {
	s := "Container image " + img.Name
	if img.Tag != "" {
		s += ":" + img.Tag
	}
	if img.Arch != "" {
		s += " for " + img.Arch
	}
	if img.ManifestMediaType != "" {
		s += ", manifest " + img.ManifestMediaType
	}
	return s + "."
}

func orNone(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// listVersion is the version of the SPDX licence list that spdxID knows,
// as SPDX writes it: major.minor.
func listVersion() string {
	v := strings.Split(spdxlicenses.LicenseListVersion(), ".")
	if len(v) < 2 {
		return ""
	}
	return v[0] + "." + v[1]
}

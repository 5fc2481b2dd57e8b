package attest

import (
	"strconv"
)

// The CycloneDX 1.6 JSON BOM (https://cyclonedx.org/docs/1.6/json/), the
// fields Nixery writes, in the order it writes them.
type cdxBOM struct {
	BOMFormat    string          `json:"bomFormat"`
	SpecVersion  string          `json:"specVersion"`
	SerialNumber string          `json:"serialNumber"`
	Version      int             `json:"version"`
	Metadata     cdxMetadata     `json:"metadata"`
	Components   []cdxComponent  `json:"components"`
	Dependencies []cdxDependency `json:"dependencies"`
}

type cdxMetadata struct {
	Tools      cdxTools      `json:"tools"`
	Component  cdxComponent  `json:"component"`
	Properties []cdxProperty `json:"properties,omitempty"`
}

type cdxTools struct {
	Components []cdxComponent `json:"components"`
}

type cdxComponent struct {
	Type               string           `json:"type"`
	BOMRef             string           `json:"bom-ref,omitempty"`
	Name               string           `json:"name"`
	Version            string           `json:"version,omitempty"`
	Description        string           `json:"description,omitempty"`
	Hashes             []cdxHash        `json:"hashes,omitempty"`
	Licenses           []cdxLicense     `json:"licenses,omitempty"`
	PURL               string           `json:"purl,omitempty"`
	ExternalReferences []cdxExternalRef `json:"externalReferences,omitempty"`
	Properties         []cdxProperty    `json:"properties,omitempty"`
}

type cdxHash struct {
	Alg     string `json:"alg"`
	Content string `json:"content"`
}

type cdxLicense struct {
	License cdxLicenseChoice `json:"license"`
}

type cdxLicenseChoice struct {
	ID   string `json:"id,omitempty"`
	Name string `json:"name,omitempty"`
}

type cdxExternalRef struct {
	Type string `json:"type"`
	URL  string `json:"url"`
}

type cdxProperty struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

type cdxDependency struct {
	Ref       string   `json:"ref"`
	DependsOn []string `json:"dependsOn,omitempty"`
}

// cdxImageRef is the bom-ref of the image, the BOM's subject.
const cdxImageRef = "image"

// CycloneDX is the image's SBOM as a CycloneDX 1.6 JSON BOM.
//
// metadata.component is the image (type container, version its manifest
// digest); components are the store paths of the closure, each with its
// store path as bom-ref, its package name and version (as in SPDX), the
// SHA-256 of its NAR as hash, meta.license (an SPDX id, else the
// licence's name), meta.homepage as a website reference, the purl
// pkg:nix/<name>@<version> and the properties nix:store_path,
// nix:nar_size and, for requested packages, nix:drv_path and
// nixery:attribute (the property names sbomnix uses where it has one).
// A requested package's outputs are applications, every other path a
// library. dependencies: the image depends on the requested packages'
// outputs, and every path on the paths it refers to. The serialNumber is
// a name-based UUID of the manifest digest; no timestamp.
func CycloneDX(img Image) ([]byte, error) {
	comps, err := components(img)
	if err != nil {
		return nil, err
	}
	props := []cdxProperty{{Name: "nixery:image", Value: img.Name}}
	if img.Tag != "" {
		props = append(props, cdxProperty{Name: "nixery:tag", Value: img.Tag})
	}
	if img.Arch != "" {
		props = append(props, cdxProperty{Name: "nixery:architecture", Value: img.Arch})
	}
	props = append(props, cdxProperty{Name: "nixery:source", Value: sourceText(img.Source)})
	if img.Source.Type != "" {
		props = append(props, cdxProperty{Name: "nixery:source:type", Value: img.Source.Type})
	}
	if img.Source.Revision != "" {
		props = append(props, cdxProperty{Name: "nixery:source:revision", Value: img.Source.Revision})
	}
	image := cdxComponent{
		Type:        "container",
		BOMRef:      cdxImageRef,
		Name:        img.Name,
		Version:     img.Manifest.String(),
		Description: imageComment(img),
		Hashes:      []cdxHash{{Alg: "SHA-256", Content: img.Manifest.Encoded()}},
		Properties:  props,
	}
	if img.Source.URI != "" {
		image.ExternalReferences = []cdxExternalRef{{Type: "vcs", URL: img.Source.URI}}
	}
	bom := cdxBOM{
		BOMFormat:    "CycloneDX",
		SpecVersion:  "1.6",
		SerialNumber: "urn:uuid:" + uuid5("https://github.com/nixery/nixery/cyclonedx/"+img.Name+"@"+img.Manifest.String()),
		Version:      1,
		Metadata: cdxMetadata{
			Tools:     cdxTools{Components: []cdxComponent{{Type: "application", Name: "nixery", Version: img.Builder.Version}}},
			Component: image,
		},
		Components:   make([]cdxComponent, 0, len(comps)),
		Dependencies: make([]cdxDependency, 0, len(comps)+1),
	}
	var roots []string
	for _, c := range comps {
		cc := cdxComponent{
			Type:    "library",
			BOMRef:  c.Path.Path,
			Name:    c.name,
			Version: c.version,
			PURL:    PURL(c.name, c.version),
			Properties: []cdxProperty{
				{Name: "nix:store_path", Value: c.Path.Path},
				{Name: "nix:nar_size", Value: strconv.FormatInt(c.NarSize, 10)},
			},
		}
		if c.NarHash != "" {
			cc.Hashes = []cdxHash{{Alg: "SHA-256", Content: c.NarHash.Encoded()}}
		}
		for _, l := range c.licenses {
			if id, ref := spdxID(l); !ref {
				cc.Licenses = append(cc.Licenses, cdxLicense{License: cdxLicenseChoice{ID: id}})
			} else {
				cc.Licenses = append(cc.Licenses, cdxLicense{License: cdxLicenseChoice{Name: licenseName(l)}})
			}
		}
		if c.homepage != "" {
			cc.ExternalReferences = []cdxExternalRef{{Type: "website", URL: c.homepage}}
		}
		if c.pkg != nil {
			cc.Type = "application"
			roots = append(roots, c.Path.Path)
			if c.pkg.DrvPath != "" {
				cc.Properties = append(cc.Properties, cdxProperty{Name: "nix:drv_path", Value: c.pkg.DrvPath})
			}
			cc.Properties = append(cc.Properties, cdxProperty{Name: "nixery:attribute", Value: c.pkg.Attribute})
		}
		bom.Components = append(bom.Components, cc)
	}
	bom.Dependencies = append(bom.Dependencies, cdxDependency{Ref: cdxImageRef, DependsOn: roots})
	for _, c := range comps {
		bom.Dependencies = append(bom.Dependencies, cdxDependency{Ref: c.Path.Path, DependsOn: c.References})
	}
	return marshal(bom)
}

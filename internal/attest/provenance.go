package attest

import (
	"encoding/json"
	"fmt"
	"regexp"
)

// An in-toto statement v1
// (https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md).
type statement struct {
	Type          string          `json:"_type"`
	Subject       []resource      `json:"subject"`
	PredicateType string          `json:"predicateType"`
	Predicate     json.RawMessage `json:"predicate"`
}

// resource is an in-toto ResourceDescriptor.
type resource struct {
	Name        string            `json:"name,omitempty"`
	URI         string            `json:"uri,omitempty"`
	Digest      map[string]string `json:"digest,omitempty"`
	Annotations map[string]any    `json:"annotations,omitempty"`
}

// SLSA provenance v1 (https://slsa.dev/spec/v1.0/provenance).
type provenance struct {
	BuildDefinition buildDefinition `json:"buildDefinition"`
	RunDetails      runDetails      `json:"runDetails"`
}

type buildDefinition struct {
	BuildType            string             `json:"buildType"`
	ExternalParameters   externalParameters `json:"externalParameters"`
	InternalParameters   map[string]string  `json:"internalParameters,omitempty"`
	ResolvedDependencies []resource         `json:"resolvedDependencies"`
}

// externalParameters are what the image's user chose: the image name
// (its packages), tag and architecture; and the operator: the source.
type externalParameters struct {
	Image        string          `json:"image"`
	Tag          string          `json:"tag,omitempty"`
	Architecture string          `json:"architecture,omitempty"`
	Packages     []string        `json:"packages"`
	Source       sourceParameter `json:"source"`
}

type sourceParameter struct {
	Type        string `json:"type,omitempty"`
	URI         string `json:"uri,omitempty"`
	Description string `json:"description,omitempty"`
}

type runDetails struct {
	Builder  builder       `json:"builder"`
	Metadata buildMetadata `json:"metadata"`
}

type builder struct {
	ID      string            `json:"id"`
	Version map[string]string `json:"version,omitempty"`
}

type buildMetadata struct {
	InvocationID string `json:"invocationId"`
}

// StatementType is the _type of an in-toto statement v1.
const StatementType = "https://in-toto.io/Statement/v1"

// Statement is an in-toto statement v1 about the image (its subject: the
// image name and the manifest's sha256 digest) with predicate, a JSON
// document of predicateType (PredicateSPDX, PredicateCycloneDX, …), as
// cosign attestations carry them (cosign attest --type spdxjson).
func Statement(img Image, predicateType string, predicate []byte) ([]byte, error) {
	if err := check(img); err != nil {
		return nil, err
	}
	if !json.Valid(predicate) {
		return nil, fmt.Errorf("predicate of %s is not JSON", predicateType)
	}
	return marshal(statement{
		Type:          StatementType,
		Subject:       []resource{{Name: img.Name, Digest: map[string]string{"sha256": img.Manifest.Encoded()}}},
		PredicateType: predicateType,
		Predicate:     json.RawMessage(predicate),
	})
}

// gitCommitRE matches a git commit that in-toto's digest set calls
// gitCommit (SHA-1).
var gitCommitRE = regexp.MustCompile(`^[0-9a-f]{40}$`)

// Provenance is the image's SLSA provenance v1, in an in-toto statement
// v1 about the image.
//
// The build type is BuildType; the external parameters are the image
// name, tag, architecture and requested packages, and the package source
// (type, URI, description). The resolved dependencies are the package
// source (its URI, and its revision as digest gitCommit when it is a git
// commit, else as an annotation) and every output of every requested
// package (its store path, a purl, the SHA-256 of its NAR as digest, the
// attribute and derivation as annotations). The builder is Builder.ID,
// with Nixery's version; the invocationId is a name-based UUID of the
// manifest digest. No times: Nixery does not promise when it built.
func Provenance(img Image) ([]byte, error) {
	if err := check(img); err != nil {
		return nil, err
	}
	if img.Builder.ID == "" {
		return nil, fmt.Errorf("image %s: provenance without a builder id", img.Name)
	}
	narHash := map[string]string{}
	for _, p := range img.Closure {
		if p.NarHash != "" {
			if err := p.NarHash.Validate(); err == nil {
				narHash[p.Path] = p.NarHash.Encoded()
			}
		}
	}
	pv := provenance{
		BuildDefinition: buildDefinition{
			BuildType: BuildType,
			ExternalParameters: externalParameters{
				Image: img.Name, Tag: img.Tag, Architecture: img.Arch,
				Packages: make([]string, 0, len(img.Packages)),
				Source:   sourceParameter{Type: img.Source.Type, URI: img.Source.URI, Description: img.Source.Description},
			},
			ResolvedDependencies: []resource{},
		},
		RunDetails: runDetails{
			Builder:  builder{ID: img.Builder.ID},
			Metadata: buildMetadata{InvocationID: "urn:uuid:" + uuid5("https://github.com/nixery/nixery/provenance/"+img.Name+"@"+img.Manifest.String())},
		},
	}
	if img.ManifestMediaType != "" {
		pv.BuildDefinition.InternalParameters = map[string]string{"manifestMediaType": img.ManifestMediaType}
	}
	if img.Builder.Version != "" {
		pv.RunDetails.Builder.Version = map[string]string{"nixery": img.Builder.Version}
	}
	src := resource{Name: "package source", URI: img.Source.URI}
	switch rev := img.Source.Revision; {
	case gitCommitRE.MatchString(rev):
		src.Digest = map[string]string{"gitCommit": rev}
	case rev != "":
		src.Annotations = map[string]any{"revision": rev}
	}
	if img.Source.Identity != "" {
		if src.Annotations == nil {
			src.Annotations = map[string]any{}
		}
		src.Annotations["identity"] = img.Source.Identity
	}
	pv.BuildDefinition.ResolvedDependencies = append(pv.BuildDefinition.ResolvedDependencies, src)
	for _, p := range img.Packages {
		pv.BuildDefinition.ExternalParameters.Packages = append(pv.BuildDefinition.ExternalParameters.Packages, p.Attribute)
		for _, o := range p.Outputs {
			r := resource{Name: o, Annotations: map[string]any{"attribute": p.Attribute}}
			if p.PName != "" {
				r.URI = PURL(p.PName, p.Version)
			}
			if h := narHash[o]; h != "" {
				r.Digest = map[string]string{"sha256": h}
			}
			if p.DrvPath != "" {
				r.Annotations["derivation"] = p.DrvPath
			}
			pv.BuildDefinition.ResolvedDependencies = append(pv.BuildDefinition.ResolvedDependencies, r)
		}
	}
	predicate, err := marshal(pv)
	if err != nil {
		return nil, err
	}
	return Statement(img, PredicateProvenance, predicate)
}

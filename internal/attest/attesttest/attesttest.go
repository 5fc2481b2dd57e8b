// Package attesttest checks documents of package attest with each
// format's own libraries, never with Nixery's code, for the tests of any
// package (attest's own, the builder's, end-to-end tests of what the
// registry serves):
//
//   - SPDX 2.3: read by the SPDX project's tools-golang, validated by it
//     (every element a relationship names exists), written back by it to
//     the same JSON value (so every field is one of the format's, of the
//     right type); every licence expression parsed by GitHub's go-spdx,
//     every LicenseRef explained; every purl parsed by packageurl-go.
//   - CycloneDX 1.6: validated against the JSON schema that cyclonedx-go
//     ships (with the SPDX licence and JSF schemas beside it, read from
//     the module cache, nothing fetched), decoded by cyclonedx-go; every
//     dependency names a component; every purl parsed.
//   - in-toto statements v1 and SLSA provenance v1: read and validated by
//     the in-toto attestation Go bindings.
package attesttest

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"

	cdx "github.com/CycloneDX/cyclonedx-go"
	"github.com/github/go-spdx/v2/spdxexp"
	slsa "github.com/in-toto/attestation/go/predicates/provenance/v1"
	intoto "github.com/in-toto/attestation/go/v1"
	"github.com/package-url/packageurl-go"
	"github.com/santhosh-tekuri/jsonschema/v6"
	spdxjson "github.com/spdx/tools-golang/json"
	"github.com/spdx/tools-golang/spdx"
	"github.com/spdx/tools-golang/spdxlib"
	"google.golang.org/protobuf/encoding/protojson"
)

// SPDX checks an SPDX 2.3 JSON document and returns it as tools-golang
// reads it.
func SPDX(t testing.TB, data []byte) *spdx.Document {
	t.Helper()
	doc, err := spdxjson.Read(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("spdx: %v", err)
	}
	if doc.SPDXVersion != "SPDX-2.3" {
		t.Errorf("spdx: version %s", doc.SPDXVersion)
	}
	if err := spdxlib.ValidateDocument(doc); err != nil {
		t.Errorf("spdx: %v", err)
	}
	refs := map[string]bool{}
	for _, e := range doc.OtherLicenses {
		refs[e.LicenseIdentifier] = true
	}
	for _, p := range doc.Packages {
		for _, e := range []string{p.PackageLicenseConcluded, p.PackageLicenseDeclared} {
			if e == "NOASSERTION" || e == "NONE" {
				continue
			}
			if ok, bad := spdxexp.ValidateLicenses([]string{e}); !ok {
				t.Errorf("spdx: %s: licence expression %q: invalid %v", p.PackageName, e, bad)
			}
			for _, id := range strings.Fields(strings.NewReplacer("(", " ", ")", " ").Replace(e)) {
				if strings.HasPrefix(id, "LicenseRef-") && !refs[id] {
					t.Errorf("spdx: %s: %s is not in hasExtractedLicensingInfos", p.PackageName, id)
				}
			}
		}
		for _, r := range p.PackageExternalReferences {
			if r.RefType != "purl" {
				continue
			}
			if _, err := packageurl.FromString(r.Locator); err != nil {
				t.Errorf("spdx: %s: purl %q: %v", p.PackageName, r.Locator, err)
			}
		}
	}
	var back bytes.Buffer
	if err := spdxjson.Write(doc, &back); err != nil {
		t.Fatalf("spdx: writing back: %v", err)
	}
	if diff := jsonDiff(data, back.Bytes()); diff != "" {
		t.Errorf("spdx: tools-golang wrote back another document: %s", diff)
	}
	return doc
}

// CycloneDX checks a CycloneDX 1.6 JSON BOM and returns it as
// cyclonedx-go decodes it.
func CycloneDX(t testing.TB, data []byte) *cdx.BOM {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("cyclonedx: %v", err)
	}
	if err := CycloneDXSchema(t).Validate(v); err != nil {
		t.Fatalf("cyclonedx: not a CycloneDX 1.6 BOM: %v", err)
	}
	var bom cdx.BOM
	if err := cdx.NewBOMDecoder(bytes.NewReader(data), cdx.BOMFileFormatJSON).Decode(&bom); err != nil {
		t.Fatalf("cyclonedx: %v", err)
	}
	if bom.SpecVersion != cdx.SpecVersion1_6 {
		t.Errorf("cyclonedx: spec version %v", bom.SpecVersion)
	}
	refs := map[string]bool{}
	if bom.Metadata != nil && bom.Metadata.Component != nil {
		refs[bom.Metadata.Component.BOMRef] = true
	}
	for _, c := range deref(bom.Components) {
		refs[c.BOMRef] = true
		if c.PackageURL == "" {
			continue
		}
		if _, err := packageurl.FromString(c.PackageURL); err != nil {
			t.Errorf("cyclonedx: %s: purl %q: %v", c.Name, c.PackageURL, err)
		}
	}
	for _, d := range deref(bom.Dependencies) {
		if !refs[d.Ref] {
			t.Errorf("cyclonedx: dependencies of %s, no component", d.Ref)
		}
		for _, on := range deref(d.Dependencies) {
			if !refs[on] {
				t.Errorf("cyclonedx: %s depends on %s, no component", d.Ref, on)
			}
		}
	}
	return &bom
}

func deref[T any](p *[]T) []T {
	if p == nil {
		return nil
	}
	return *p
}

// Statement checks an in-toto statement v1 (not v0.1) whose one subject
// has a sha256 digest, and returns it as the in-toto bindings read it.
func Statement(t testing.TB, data []byte) *intoto.Statement {
	t.Helper()
	var st intoto.Statement
	if err := protojson.Unmarshal(data, &st); err != nil {
		t.Fatalf("in-toto: %v", err)
	}
	if err := st.Validate(); err != nil {
		t.Fatalf("in-toto: %v", err)
	}
	if st.GetType() != "https://in-toto.io/Statement/v1" { // Validate takes v0.1 too
		t.Errorf("in-toto: statement type %s", st.GetType())
	}
	if len(st.GetSubject()) != 1 || len(st.GetSubject()[0].GetDigest()["sha256"]) != 64 {
		t.Errorf("in-toto: subject %v", st.GetSubject())
	}
	return &st
}

// Provenance checks an in-toto statement of SLSA provenance v1 and
// returns the statement and its predicate as the in-toto bindings read
// them.
func Provenance(t testing.TB, data []byte) (*intoto.Statement, *slsa.Provenance) {
	t.Helper()
	st := Statement(t, data)
	if st.GetPredicateType() != "https://slsa.dev/provenance/v1" {
		t.Fatalf("slsa: predicate type %s", st.GetPredicateType())
	}
	pj, err := protojson.Marshal(st.GetPredicate())
	if err != nil {
		t.Fatalf("slsa: %v", err)
	}
	var pv slsa.Provenance
	if err := protojson.Unmarshal(pj, &pv); err != nil {
		t.Fatalf("slsa: %v", err)
	}
	if err := pv.Validate(); err != nil {
		t.Fatalf("slsa: %v", err)
	}
	return st, &pv
}

var schema struct {
	once   sync.Once
	schema *jsonschema.Schema
	err    error
}

// CycloneDXSchema is the CycloneDX 1.6 JSON schema that the
// cyclonedx-go module ships (its schema/ directory), with the schemas it
// refers to from the same directory, formats asserted.
func CycloneDXSchema(t testing.TB) *jsonschema.Schema {
	t.Helper()
	schema.once.Do(func() { schema.schema, schema.err = compileCycloneDX() })
	if schema.err != nil {
		t.Fatalf("cyclonedx schema: %v", schema.err)
	}
	return schema.schema
}

func compileCycloneDX() (*jsonschema.Schema, error) {
	// The module cache has cyclonedx-go: this package imports it.
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/CycloneDX/cyclonedx-go").Output()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "schema")
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	for id, file := range map[string]string{
		"http://cyclonedx.org/schema/bom-1.6.schema.json":  "bom-1.6.schema.json",
		"http://cyclonedx.org/schema/spdx.schema.json":     "spdx.schema.json",
		"http://cyclonedx.org/schema/jsf-0.82.schema.json": "jsf-0.82.schemax.json",
	} {
		f, err := os.Open(filepath.Join(dir, file))
		if err != nil {
			return nil, err
		}
		doc, err := jsonschema.UnmarshalJSON(f)
		f.Close()
		if err != nil {
			return nil, err
		}
		if err := c.AddResource(id, doc); err != nil {
			return nil, err
		}
	}
	return c.Compile("http://cyclonedx.org/schema/bom-1.6.schema.json")
}

// jsonDiff says where a and b first differ as JSON values, or "".
func jsonDiff(a, b []byte) string {
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		return err.Error()
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		return err.Error()
	}
	if reflect.DeepEqual(va, vb) {
		return ""
	}
	ja, _ := json.MarshalIndent(va, "", " ")
	jb, _ := json.MarshalIndent(vb, "", " ")
	la, lb := strings.Split(string(ja), "\n"), strings.Split(string(jb), "\n")
	for i := range min(len(la), len(lb)) {
		if la[i] != lb[i] {
			return "at line " + strconv.Itoa(i) + ": " + la[i] + " | " + lb[i]
		}
	}
	return "in length"
}

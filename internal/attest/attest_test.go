package attest

import (
	"bytes"
	"encoding/json"
	"runtime"
	"slices"
	"strings"
	"testing"

	cdx "github.com/CycloneDX/cyclonedx-go"
	"github.com/opencontainers/go-digest"
	"github.com/package-url/packageurl-go"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/spdx/tools-golang/spdxlib"

	"github.com/nixery/nixery/internal/attest/attesttest"
)

// formats are the documents, by name.
var formats = map[string]func(Image) ([]byte, error){
	"spdx":       SPDX,
	"cyclonedx":  CycloneDX,
	"provenance": Provenance,
}

// forImages runs check on the document format makes of the realistic
// image and of a synthetic one of 2,000 store paths.
func forImages(t *testing.T, format func(Image) ([]byte, error), check func(t *testing.T, img Image, data []byte)) {
	t.Helper()
	for _, img := range []Image{realistic(), synthetic(2000)} {
		t.Run(img.Name, func(t *testing.T) {
			data, err := format(img)
			if err != nil {
				t.Fatal(err)
			}
			check(t, img, data)
		})
	}
}

// TestDeterministic: the same image gives the same bytes, whatever the
// order of its closure and references; another closure other bytes.
func TestDeterministic(t *testing.T) {
	for name, format := range formats {
		t.Run(name, func(t *testing.T) {
			img := realistic()
			a, err := format(img)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := format(realistic())
			if !bytes.Equal(a, b) {
				t.Error("the same image gave other bytes")
			}

			shuffled := realistic()
			slices.Reverse(shuffled.Closure)
			for i := range shuffled.Closure {
				slices.Reverse(shuffled.Closure[i].References)
			}
			if c, _ := format(shuffled); !bytes.Equal(a, c) {
				t.Error("the closure in another order gave other bytes")
			}

			changed := realistic()
			changed.Closure[7].NarHash = narHash("another") // bash-interactive, requested
			if d, _ := format(changed); bytes.Equal(a, d) {
				t.Error("another NAR hash gave the same bytes")
			}
			if name == "provenance" {
				return // it names the requested packages, not the closure
			}
			fewer := realistic()
			fewer.Closure[0].References = fewer.Closure[0].References[1:]
			if d, _ := format(fewer); bytes.Equal(a, d) {
				t.Error("fewer references gave the same bytes")
			}
			if bytes.Contains(a, []byte("T0")) && !bytes.Contains(a, []byte("1970-01-01T00:00:01Z")) {
				t.Error("a time other than the epoch")
			}
		})
	}
}

// TestSPDX checks the SPDX document with the SPDX project's libraries
// (attesttest.SPDX).
func TestSPDX(t *testing.T) {
	forImages(t, SPDX, func(t *testing.T, img Image, data []byte) {
		doc := attesttest.SPDX(t, data)
		described, err := spdxlib.GetDescribedPackageIDs(doc)
		if err != nil || len(described) != 1 || described[0] != "Image" {
			t.Errorf("described: %v, %v; want the image", described, err)
		}
		if len(doc.Packages) != len(img.Closure)+1 {
			t.Errorf("%d packages, want %d", len(doc.Packages), len(img.Closure)+1)
		}
	})
}

// TestSPDXContents checks what the document says of the realistic image.
func TestSPDXContents(t *testing.T) {
	img := realistic()
	data, err := SPDX(img)
	if err != nil {
		t.Fatal(err)
	}
	doc := attesttest.SPDX(t, data)
	if want := "https://github.com/nixery/nixery/spdx/shell%2Fgit%2Fhello%2Fjq/" + img.Manifest.Encoded(); doc.DocumentNamespace != want {
		t.Errorf("namespace %s, want %s", doc.DocumentNamespace, want)
	}
	if doc.CreationInfo.Created != "1970-01-01T00:00:01Z" {
		t.Errorf("created %s", doc.CreationInfo.Created)
	}
	byName := map[string]int{}
	for i, p := range doc.Packages {
		byName[p.PackageName+" "+p.PackageVersion] = i
	}
	for _, tt := range []struct{ pkg, license, purl string }{
		{"git 2.45.2", "GPL-2.0-or-later", "pkg:nix/git@2.45.2"},
		{"jq 1.7.1-bin", "MIT AND CC-BY-3.0", "pkg:nix/jq@1.7.1-bin"},
		{"steam-run 1.0", "LicenseRef-unfreeRedistributable", "pkg:nix/steam-run@1.0"},
		{"corp-tool 0.3", "LicenseRef-Corp-EULA AND GPL-2.0-or-later", "pkg:nix/corp-tool@0.3"},
		{"old-thing 1.0", "GPL-2.0+ AND LicenseRef-free", "pkg:nix/old-thing@1.0"},
		{"python3.12-numpy 1.26.4", "NOASSERTION", "pkg:nix/python3.12-numpy@1.26.4"},
		{"python3 3.12.4-env", "NOASSERTION", "pkg:nix/python3@3.12.4-env"},
		{"xgcc 13.3.0-libgcc", "NOASSERTION", "pkg:nix/xgcc@13.3.0-libgcc"},
	} {
		i, ok := byName[tt.pkg]
		if !ok {
			t.Errorf("no package %s", tt.pkg)
			continue
		}
		p := doc.Packages[i]
		if p.PackageLicenseDeclared != tt.license || p.PackageLicenseConcluded != tt.license {
			t.Errorf("%s: licences %q, %q; want %q", tt.pkg, p.PackageLicenseDeclared, p.PackageLicenseConcluded, tt.license)
		}
		if len(p.PackageExternalReferences) != 1 || p.PackageExternalReferences[0].Locator != tt.purl {
			t.Errorf("%s: external refs %+v, want %s", tt.pkg, p.PackageExternalReferences, tt.purl)
		}
		if len(p.PackageChecksums) != 1 || p.PackageChecksums[0].Algorithm != "SHA256" || len(p.PackageChecksums[0].Value) != 64 {
			t.Errorf("%s: checksums %+v", tt.pkg, p.PackageChecksums)
		}
		if !strings.HasPrefix(p.PackageFileName, "/nix/store/") {
			t.Errorf("%s: file name %q", tt.pkg, p.PackageFileName)
		}
	}
	git := doc.Packages[byName["git 2.45.2"]]
	if git.PackageHomePage != "https://git-scm.com/" || !strings.Contains(git.PackageComment, "requested as git") {
		t.Errorf("git: homepage %q, comment %q", git.PackageHomePage, git.PackageComment)
	}
	deps := 0
	for _, r := range doc.Relationships {
		if r.Relationship == "DEPENDS_ON" && r.RefA.ElementRefID == git.PackageSPDXIdentifier {
			deps++
		}
	}
	if deps != 7 {
		t.Errorf("git DEPENDS_ON %d paths, want 7", deps)
	}
	if !strings.Contains(doc.DocumentComment, img.Source.Revision) || !strings.Contains(doc.DocumentComment, img.Manifest.String()) {
		t.Errorf("the comment %q names neither the revision nor the manifest", doc.DocumentComment)
	}
}

// TestCycloneDX checks the BOM with CycloneDX's schema and library
// (attesttest.CycloneDX).
func TestCycloneDX(t *testing.T) {
	forImages(t, CycloneDX, func(t *testing.T, img Image, data []byte) {
		bom := attesttest.CycloneDX(t, data)
		if bom.Metadata.Component.Type != cdx.ComponentTypeContainer || bom.Metadata.Component.Version != img.Manifest.String() {
			t.Errorf("subject %+v", bom.Metadata.Component)
		}
		if len(*bom.Components) != len(img.Closure) || len(*bom.Dependencies) != len(img.Closure)+1 {
			t.Errorf("%d components, %d dependencies for %d paths", len(*bom.Components), len(*bom.Dependencies), len(img.Closure))
		}
		if !strings.HasPrefix(bom.SerialNumber, "urn:uuid:") || bom.Metadata.Timestamp != "" {
			t.Errorf("serial %s, timestamp %q", bom.SerialNumber, bom.Metadata.Timestamp)
		}
	})
}

// TestCycloneDXContents checks licences and the component of a requested
// package.
func TestCycloneDXContents(t *testing.T) {
	data, err := CycloneDX(realistic())
	if err != nil {
		t.Fatal(err)
	}
	bom := attesttest.CycloneDX(t, data)
	byName := map[string]cdx.Component{}
	for _, c := range *bom.Components {
		byName[c.Name+" "+c.Version] = c
	}
	licences := func(c cdx.Component) []string {
		var out []string
		for _, l := range *orLicenses(c.Licenses) {
			out = append(out, l.License.ID+"|"+l.License.Name)
		}
		return out
	}
	for _, tt := range []struct {
		pkg  string
		want []string
	}{
		{"jq 1.7.1-bin", []string{"MIT|", "CC-BY-3.0|"}},
		{"steam-run 1.0", []string{"|Unfree redistributable"}},
		{"corp-tool 0.3", []string{"|Corp End User Licence Agreement", "GPL-2.0-or-later|"}},
		{"glibc 2.39-52", nil},
	} {
		if got := licences(byName[tt.pkg]); !slices.Equal(got, tt.want) {
			t.Errorf("%s: licences %q, want %q", tt.pkg, got, tt.want)
		}
	}
	git := byName["git 2.45.2"]
	if git.Type != cdx.ComponentTypeApplication || git.PackageURL != "pkg:nix/git@2.45.2" || len(*git.Hashes) != 1 || (*git.ExternalReferences)[0].URL != "https://git-scm.com/" {
		t.Errorf("git: %+v", git)
	}
	props := map[string]string{}
	for _, p := range *git.Properties {
		props[p.Name] = p.Value
	}
	if !strings.HasSuffix(props["nix:store_path"], "-git-2.45.2") || props["nix:nar_size"] == "" || !strings.HasSuffix(props["nix:drv_path"], ".drv") || props["nixery:attribute"] != "git" {
		t.Errorf("git's properties: %v", props)
	}
	if byName["zlib 1.3.1"].Type != cdx.ComponentTypeLibrary {
		t.Error("zlib is no library")
	}
}

func orLicenses(l *cdx.Licenses) *cdx.Licenses {
	if l == nil {
		return &cdx.Licenses{}
	}
	return l
}

// TestProvenance checks the statement and its predicate with the in-toto
// attestation Go bindings (attesttest.Provenance).
func TestProvenance(t *testing.T) {
	forImages(t, Provenance, func(t *testing.T, img Image, data []byte) {
		st, pv := attesttest.Provenance(t, data)
		if st.GetType() != StatementType || st.GetSubject()[0].GetName() != img.Name || st.GetSubject()[0].GetDigest()["sha256"] != img.Manifest.Encoded() {
			t.Errorf("statement %s, subject %v", st.GetType(), st.GetSubject())
		}
		bd := pv.GetBuildDefinition()
		if bd.GetBuildType() != BuildType || pv.GetRunDetails().GetBuilder().GetId() != img.Builder.ID || pv.GetRunDetails().GetBuilder().GetVersion()["nixery"] != "1.4.0" {
			t.Errorf("build type %s, builder %v", bd.GetBuildType(), pv.GetRunDetails().GetBuilder())
		}
		ext := bd.GetExternalParameters().AsMap()
		if ext["image"] != img.Name || ext["tag"] != img.Tag || ext["architecture"] != img.Arch {
			t.Errorf("external parameters %v", ext)
		}
		outputs := 0
		for _, p := range img.Packages {
			outputs += len(p.Outputs)
		}
		deps := bd.GetResolvedDependencies()
		if len(deps) != outputs+1 {
			t.Fatalf("%d resolved dependencies, want the source and %d outputs", len(deps), outputs)
		}
		if img.Source.Revision != "" && deps[0].GetDigest()["gitCommit"] != img.Source.Revision {
			t.Errorf("source %v", deps[0])
		}
		for _, d := range deps[1:] {
			if len(d.GetDigest()["sha256"]) != 64 || d.GetAnnotations().AsMap()["attribute"] == nil {
				t.Errorf("package dependency %v", d)
			}
		}
		if pv.GetRunDetails().GetMetadata().GetInvocationId() == "" || pv.GetRunDetails().GetMetadata().GetStartedOn() != nil {
			t.Errorf("metadata %v", pv.GetRunDetails().GetMetadata())
		}
	})
}

// TestStatement wraps both SBOMs as cosign attests them, and checks the
// statements with the in-toto bindings.
func TestStatement(t *testing.T) {
	img := realistic()
	for pt, format := range map[string]func(Image) ([]byte, error){PredicateSPDX: SPDX, PredicateCycloneDX: CycloneDX} {
		doc, err := format(img)
		if err != nil {
			t.Fatal(err)
		}
		data, err := Statement(img, pt, doc)
		if err != nil {
			t.Fatal(err)
		}
		st := attesttest.Statement(t, data)
		if st.GetPredicateType() != pt {
			t.Errorf("predicate type %s, want %s", st.GetPredicateType(), pt)
		}
		var decoded struct {
			Predicate json.RawMessage `json:"predicate"`
		}
		if err := json.Unmarshal(data, &decoded); err != nil || !bytes.Equal(decoded.Predicate, doc) {
			t.Errorf("%s: the predicate is not the document as it was", pt)
		}
	}
	if _, err := Statement(img, PredicateSPDX, []byte("{")); err == nil {
		t.Error("a predicate that is no JSON was wrapped")
	}
}

// TestErrors: what no document can be made of.
func TestErrors(t *testing.T) {
	for name, change := range map[string]func(*Image){
		"no name":           func(img *Image) { img.Name = "" },
		"no manifest":       func(img *Image) { img.Manifest = "" },
		"a sha512 manifest": func(img *Image) { img.Manifest = digest.Digest("sha512:" + strings.Repeat("0", 128)) },
		"not a store path":  func(img *Image) { img.Closure[0].Path = "hello" },
		"a path twice":      func(img *Image) { img.Closure[1].Path = img.Closure[0].Path },
		"a bad NAR hash":    func(img *Image) { img.Closure[0].NarHash = "sha256:xyz" },
	} {
		img := realistic()
		change(&img)
		for fn, format := range map[string]func(Image) ([]byte, error){"spdx": SPDX, "cyclonedx": CycloneDX} {
			if _, err := format(img); err == nil {
				t.Errorf("%s: %s made a document", name, fn)
			}
		}
	}
	img := realistic()
	img.Builder.ID = ""
	if _, err := Provenance(img); err == nil {
		t.Error("provenance without a builder")
	}
}

func TestParseName(t *testing.T) {
	for _, tt := range []struct{ in, name, version string }{
		{"hello-2.12.1", "hello", "2.12.1"},
		{"python3.12-numpy-1.26.4", "python3.12-numpy", "1.26.4"},
		{"bootstrap-busybox", "bootstrap-busybox", ""},
		{"gcc-13.3.0-lib", "gcc", "13.3.0-lib"},
		{"bash-interactive-5.2p37", "bash-interactive", "5.2p37"},
		{"nix-2.8.0-man", "nix", "2.8.0-man"},
		{"x-", "x-", ""},
		{"a-b-c", "a-b-c", ""},
		{"foo-1", "foo", "1"},
		{"foo--1", "foo", "-1"},
	} {
		if n, v := ParseName(tt.in); n != tt.name || v != tt.version {
			t.Errorf("ParseName(%q) = %q, %q; want %q, %q", tt.in, n, v, tt.name, tt.version)
		}
	}
}

// TestPURL checks our package URLs against the purl library's parser.
func TestPURL(t *testing.T) {
	for _, tt := range []struct{ name, version, want string }{
		{"hello", "2.12.1", "pkg:nix/hello@2.12.1"},
		{"python3.12-numpy", "1.26.4", "pkg:nix/python3.12-numpy@1.26.4"},
		{"bootstrap-busybox", "", "pkg:nix/bootstrap-busybox"},
		{"c++-thing", "1.0+git", "pkg:nix/c%2B%2B-thing@1.0%2Bgit"},
		{"a b/c@d", "1?#", "pkg:nix/a%20b%2Fc%40d@1%3F%23"},
	} {
		got := PURL(tt.name, tt.version)
		if got != tt.want {
			t.Errorf("PURL(%q, %q) = %s, want %s", tt.name, tt.version, got, tt.want)
		}
		p, err := packageurl.FromString(got)
		if err != nil {
			t.Errorf("%s: %v", got, err)
			continue
		}
		if p.Type != "nix" || p.Name != tt.name || p.Version != tt.version {
			t.Errorf("%s reads as %q %q %q", got, p.Type, p.Name, p.Version)
		}
	}
}

func TestUUID5(t *testing.T) {
	// RFC 9562's example is in the DNS namespace; this is the URL
	// namespace's value for "https://example.com", as Python's
	// uuid.uuid5(uuid.NAMESPACE_URL, "https://example.com") gives it.
	if got := uuid5("https://example.com"); got != "4fd35a71-71ef-5a55-a9d9-aa75c889a6d0" {
		t.Errorf("uuid5 = %s", got)
	}
}

// TestSchemaCatches shows that the schema check fails for what it must
// catch: a licence id not on the SPDX list, a wrong hash algorithm.
func TestSchemaCatches(t *testing.T) {
	schema := attesttest.CycloneDXSchema(t)
	good, err := CycloneDX(realistic())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ from, to string }{
		{`{"license":{"id":"MIT"}}`, `{"license":{"id":"Not-A-Licence"}}`},
		{`"alg":"SHA-256"`, `"alg":"SHA256"`},
		{`"type":"container"`, `"type":"image"`},
	} {
		bad := bytes.Replace(good, []byte(tt.from), []byte(tt.to), 1)
		if bytes.Equal(bad, good) {
			t.Fatalf("%s is not in the BOM", tt.from)
		}
		v, err := jsonschema.UnmarshalJSON(bytes.NewReader(bad))
		if err != nil {
			t.Fatal(err)
		}
		if schema.Validate(v) == nil {
			t.Errorf("%s passed the schema", tt.to)
		}
	}
}

// failure records whether a check failed; Fatalf ends the goroutine of
// the check, as testing's does.
type failure struct {
	testing.TB
	failed bool
}

func (f *failure) Helper()               {}
func (f *failure) Errorf(string, ...any) { f.failed = true }
func (f *failure) Fatalf(string, ...any) { f.failed = true; runtime.Goexit() }

// fails reports whether check fails on data.
func fails(t *testing.T, check func(testing.TB, []byte), data []byte) bool {
	f := &failure{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		check(f, data)
	}()
	<-done
	return f.failed
}

// TestCheckersCatch shows that attesttest's checks fail for what they must
// catch, and pass the documents as made.
func TestCheckersCatch(t *testing.T) {
	img := realistic()
	spdxDoc, _ := SPDX(img)
	prov, _ := Provenance(img)
	spdxCheck := func(tb testing.TB, data []byte) { attesttest.SPDX(tb, data) }
	provCheck := func(tb testing.TB, data []byte) { attesttest.Provenance(tb, data) }
	for _, tt := range []struct {
		name     string
		check    func(testing.TB, []byte)
		doc      []byte
		from, to string
	}{
		{"spdx as made", spdxCheck, spdxDoc, "", ""},
		{"spdx: a field the format has not", spdxCheck, spdxDoc, `"versionInfo"`, `"versionInfos"`},
		{"spdx: a licence SPDX does not list", spdxCheck, spdxDoc, `"licenseDeclared":"GPL-2.0-or-later"`, `"licenseDeclared":"GPL-2.0-or-later AND Not-A-Licence"`},
		{"spdx: an unexplained LicenseRef", spdxCheck, spdxDoc, `"licenseId":"LicenseRef-free"`, `"licenseId":"LicenseRef-other"`},
		{"spdx: a relationship to nothing", spdxCheck, spdxDoc, `"relatedSpdxElement":"SPDXRef-Image"`, `"relatedSpdxElement":"SPDXRef-Nothing"`},
		{"spdx: a bad purl", spdxCheck, spdxDoc, `"referenceLocator":"pkg:nix/git@2.45.2"`, `"referenceLocator":"nix/git@2.45.2"`},
		{"provenance as made", provCheck, prov, "", ""},
		{"provenance: another statement type", provCheck, prov, StatementType, "https://in-toto.io/Statement/v0.1"},
		{"provenance: no builder id", provCheck, prov, `"id":"https://nixery.example.org"`, `"id":""`},
		{"provenance: a short digest", provCheck, prov, `"gitCommit":"0123456789abcdef0123456789abcdef01234567"`, `"gitCommit":"0123"`},
	} {
		doc := tt.doc
		if tt.from != "" {
			doc = bytes.Replace(doc, []byte(tt.from), []byte(tt.to), 1)
			if bytes.Equal(doc, tt.doc) {
				t.Fatalf("%s: %s is not in the document", tt.name, tt.from)
			}
		}
		if got, want := fails(t, tt.check, doc), tt.from != ""; got != want {
			t.Errorf("%s: failed %v, want %v", tt.name, got, want)
		}
	}
}

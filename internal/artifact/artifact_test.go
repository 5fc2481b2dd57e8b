package artifact

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

var subject = ocispec.Descriptor{
	MediaType: ocispec.MediaTypeImageManifest,
	Digest:    digest.FromString("image"),
	Size:      5,
}

func TestNew(t *testing.T) {
	doc := NewBlob("application/spdx+json", []byte(`{"spdxVersion":"SPDX-2.3"}`))
	doc.Descriptor.Annotations = map[string]string{ocispec.AnnotationTitle: "sbom.spdx.json"}
	a, err := New(Spec{
		ArtifactType: "application/spdx+json",
		Layers:       []Blob{doc},
		Subject:      subject,
		Annotations:  map[string]string{"k": "v"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/spdx+json",` +
		`"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},` +
		`"layers":[{"mediaType":"application/spdx+json","digest":"` + doc.Descriptor.Digest.String() + `","size":26,"annotations":{"org.opencontainers.image.title":"sbom.spdx.json"}}],` +
		`"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + subject.Digest.String() + `","size":5},"annotations":{"k":"v"}}`
	if string(a.Manifest.Data) != want {
		t.Errorf("manifest\n%s\nwant\n%s", a.Manifest.Data, want)
	}
	d := a.Manifest.Descriptor
	if d.MediaType != ocispec.MediaTypeImageManifest || d.Digest != digest.FromBytes(a.Manifest.Data) || d.Size != int64(len(a.Manifest.Data)) ||
		d.ArtifactType != "application/spdx+json" || d.Annotations["k"] != "v" || a.ArtifactType() != "application/spdx+json" {
		t.Errorf("descriptor %+v", d)
	}
	if a.Subject != subject.Digest || a.Tag != "" {
		t.Errorf("subject %q, tag %q", a.Subject, a.Tag)
	}
	if len(a.Blobs) != 2 || string(a.Blobs[0].Data) != "{}" || a.Blobs[1].Descriptor.Digest != doc.Descriptor.Digest {
		t.Errorf("blobs %+v", a.Blobs)
	}
	b, _ := New(Spec{ArtifactType: "application/spdx+json", Layers: []Blob{doc}, Subject: subject, Annotations: map[string]string{"k": "v"}})
	if b.Manifest.Descriptor.Digest != d.Digest {
		t.Error("the same spec gave another manifest")
	}
}

// TestNewConfigType: with a config of its own and no artifactType, the
// referrers descriptor takes the config's media type.
func TestNewConfigType(t *testing.T) {
	a, err := New(Spec{Config: NewBlob("application/x.config", []byte("c")), Layers: []Blob{NewBlob("text/plain", []byte("l"))}, Tag: "t"})
	if err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(a.Manifest.Data, &m); err != nil {
		t.Fatal(err)
	}
	if m.ArtifactType != "" || m.Subject != nil || a.Subject != "" || a.ArtifactType() != "application/x.config" || a.Tag != "t" {
		t.Errorf("manifest %s, artifact type %q", a.Manifest.Data, a.ArtifactType())
	}
}

func TestNewRefuses(t *testing.T) {
	l := NewBlob("text/plain", []byte("l"))
	bad := l
	bad.Data = []byte("other")
	wrongSize := l
	wrongSize.Descriptor.Size = 7
	for _, tt := range []struct {
		name string
		spec Spec
		want string
	}{
		{"no layers", Spec{ArtifactType: "a/b"}, "no layers"},
		{"no type", Spec{Layers: []Blob{l}}, "needs an artifact type"},
		{"wrong digest", Spec{ArtifactType: "a/b", Layers: []Blob{bad}}, "size"},
		{"wrong size", Spec{ArtifactType: "a/b", Layers: []Blob{wrongSize}}, "size"},
		{"data changed", Spec{ArtifactType: "a/b", Layers: []Blob{{Descriptor: l.Descriptor, Data: []byte("m")}}}, "digest"},
		{"no media type", Spec{ArtifactType: "a/b", Layers: []Blob{{Descriptor: ocispec.Descriptor{Digest: l.Descriptor.Digest, Size: 1}, Data: []byte("l")}}}, "media type"},
		{"bad subject", Spec{ArtifactType: "a/b", Layers: []Blob{l}, Subject: ocispec.Descriptor{Digest: "sha256:x"}}, "subject"},
	} {
		if _, err := New(tt.spec); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
}

func TestDocument(t *testing.T) {
	a, err := Document(subject, "application/vnd.cyclonedx+json", "sbom.cdx.json", []byte(`{"bomFormat":"CycloneDX"}`))
	if err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(a.Manifest.Data, &m); err != nil {
		t.Fatal(err)
	}
	if m.ArtifactType != "application/vnd.cyclonedx+json" || m.Subject.Digest != subject.Digest || len(m.Layers) != 1 ||
		m.Layers[0].MediaType != "application/vnd.cyclonedx+json" || m.Layers[0].Annotations[ocispec.AnnotationTitle] != "sbom.cdx.json" {
		t.Errorf("manifest %s", a.Manifest.Data)
	}
}

func TestIndex(t *testing.T) {
	a, _ := Document(subject, "application/spdx+json", "sbom.spdx.json", []byte("{}"))
	b, _ := Document(subject, "application/vnd.cyclonedx+json", "sbom.cdx.json", []byte("{}"))
	data, err := Index(a, b)
	if err != nil {
		t.Fatal(err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(data, &idx); err != nil {
		t.Fatal(err)
	}
	if idx.MediaType != ocispec.MediaTypeImageIndex || idx.SchemaVersion != 2 || len(idx.Manifests) != 2 ||
		idx.Manifests[0].Digest != a.Manifest.Descriptor.Digest || idx.Manifests[1].ArtifactType != "application/vnd.cyclonedx+json" {
		t.Errorf("index %s", data)
	}
	if got := ReferrersTag(subject.Digest); got != "sha256-"+subject.Digest.Encoded() {
		t.Errorf("ReferrersTag = %q", got)
	}
}

package metadata_test

import (
	"context"
	"reflect"
	"testing"

	"github.com/nixery/nixery/internal/metadata"
	"github.com/nixery/nixery/internal/nix"
	"github.com/nixery/nixery/internal/storage"
)

// Details written before SBOMs (no source type, meta, NAR hashes or
// references) still read; new ones read back as written.
func TestDetailsCompatible(t *testing.T) {
	ctx := context.Background()
	fs, err := storage.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	md := metadata.New(fs, nil)
	const key = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	old := `{"name":"hello","tag":"latest","packages":["hello"],"arch":"amd64","source":"path:x","revision":"","built":"2026-11-01T10:00:00Z",` +
		`"roots":["/nix/store/a-hello"],"closure":[{"path":"/nix/store/a-hello","size":12}],"layers":[],"manifests":{}}`
	if err := fs.PutObject(ctx, "details/"+key, []byte(old)); err != nil {
		t.Fatal(err)
	}
	d, err := md.Details(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != "hello" || len(d.Closure) != 1 || d.Closure[0].NarHash != "" || d.PackageMeta != nil || d.SourceType != "" {
		t.Errorf("old details read as %+v", d)
	}

	d.SourceType, d.SourceName, d.SourceURI = "git", "the demo set", "git+file:///srv/pkgs"
	d.Closure[0].NarHash = "sha256:" + key
	d.Closure[0].References = []string{"/nix/store/b-lib"}
	d.PackageMeta = []metadata.PackageInfo{{Name: "hello", Outputs: []string{"/nix/store/a-hello"}, Meta: nix.Meta{
		PName: "hello", Version: "2.12.1", Licenses: []nix.License{{SPDXID: "GPL-3.0-or-later"}}, Homepage: "https://example.org", DrvPath: "/nix/store/c-hello.drv",
	}}}
	if err := md.PutDetails(ctx, key, d); err != nil {
		t.Fatal(err)
	}
	back, err := md.Details(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, d) {
		t.Errorf("read back %+v\nwant %+v", back, d)
	}
}

package builder

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nixery/nixery/internal/manifest"
	"github.com/nixery/nixery/internal/source"
	"github.com/nixery/nixery/internal/storage"
)

// built is an image as the builder stored it.
type built struct {
	digest digest.Digest
	layers []digest.Digest
	config v1.ImageConfig
	custom map[string]*tar.Header // the customisation layer's entries
	files  map[string]string      // and its regular files' contents
}

func buildImage(t *testing.T, b *Builder, name string) built {
	t.Helper()
	ctx := context.Background()
	data, d, err := b.Manifest(ctx, request(t, name, "latest"), manifest.OCIManifest)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	out := built{digest: d, custom: map[string]*tar.Header{}, files: map[string]string{}}
	var m v1.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	for _, l := range m.Layers {
		out.layers = append(out.layers, l.Digest)
	}
	cfgData, err := storage.Get(ctx, b.Storage, m.Config.Digest)
	if err != nil {
		t.Fatal(err)
	}
	var cfg v1.Image
	if err := json.Unmarshal(cfgData, &cfg); err != nil {
		t.Fatal(err)
	}
	out.config = cfg.Config
	blob, err := storage.Get(ctx, b.Storage, out.layers[len(out.layers)-1])
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		out.custom[hdr.Name] = hdr
		if hdr.Typeflag == tar.TypeReg {
			content, _ := io.ReadAll(tr)
			out.files[hdr.Name] = string(content)
		}
	}
	return out
}

// TestNonRootImage: nonroot/shell/hello shares every store-path layer with
// shell/hello and differs in the customisation layer and the config; the
// two never share a manifest cache entry or a customisation layer cache
// entry, whichever is built first.
func TestNonRootImage(t *testing.T) {
	pkgs := demoSet(t)
	for _, order := range [][2]string{{"shell/hello", "nonroot/shell/hello"}, {"nonroot/shell/hello", "shell/hello"}} {
		t.Run(order[0]+" first", func(t *testing.T) {
			b := newBuilder(t, source.PathSource{Path: pkgs}, t.TempDir())
			images := map[string]built{}
			for i, name := range order {
				images[name] = buildImage(t, b, name)
				if n := b.Stats().NixBuilds.Load(); n != int64(i+1) {
					t.Errorf("after %s Nix ran %d times, want %d: the cache took one for the other", name, n, i+1)
				}
			}
			root, nonroot := images["shell/hello"], images["nonroot/shell/hello"]
			if root.digest == nonroot.digest {
				t.Fatal("same manifest for root and nonroot")
			}
			n := len(root.layers)
			if len(nonroot.layers) != n || !slices.Equal(root.layers[:n-1], nonroot.layers[:n-1]) {
				t.Errorf("store-path layers differ:\n%v\n%v", root.layers, nonroot.layers)
			}
			if root.layers[n-1] == nonroot.layers[n-1] {
				t.Error("same customisation layer for root and nonroot")
			}

			if c := root.config; c.User != "" || c.WorkingDir != "" || slices.ContainsFunc(c.Env, func(e string) bool { return strings.HasPrefix(e, "HOME=") }) {
				t.Errorf("root config: %+v", c)
			}
			if c := nonroot.config; c.User != "65532:65532" || c.WorkingDir != "/home/nonroot" ||
				!slices.Contains(c.Env, "HOME=/home/nonroot") || !slices.Equal(c.Cmd, []string{"bash"}) {
				t.Errorf("nonroot config: %+v", c)
			}

			if strings.Contains(root.files["etc/passwd"], "nonroot") || root.custom["home/nonroot/"] != nil {
				t.Errorf("root image has nonroot: passwd %q", root.files["etc/passwd"])
			}
			if !strings.Contains(nonroot.files["etc/passwd"], "nonroot:x:65532:65532:") || !strings.Contains(nonroot.files["etc/group"], "nonroot:x:65532:") {
				t.Errorf("nonroot passwd %q, group %q", nonroot.files["etc/passwd"], nonroot.files["etc/group"])
			}
			if h := nonroot.custom["home/nonroot/"]; h == nil || h.Uid != 65532 || h.Gid != 65532 || h.Mode != 0o755 {
				t.Errorf("home/nonroot/: %+v", h)
			}
			if h := nonroot.custom["tmp/"]; h == nil || h.Mode != 0o1777 {
				t.Errorf("tmp/: %+v", h)
			}
		})
	}
}

// TestMainProgramCmd: an image whose one requested package with
// meta.mainProgram (the demo set's hello) has no shell runs that program;
// with a shell it runs bash; with no such package it has no Cmd.
func TestMainProgramCmd(t *testing.T) {
	b := newBuilder(t, source.PathSource{Path: demoSet(t)}, t.TempDir())
	for _, tt := range []struct {
		name string
		cmd  string // "bash", a suffix of the program's path, or "" for no Cmd
	}{
		{"hello", "-hello-2.12.1/bin/hello"},
		{"nonroot/hello", "-hello-2.12.1/bin/hello"},
		{"hello/jq", "-hello-2.12.1/bin/hello"}, // jq names no program
		{"shell/hello", "bash"},
		{"jq", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmd := buildImage(t, b, tt.name).config.Cmd
			switch tt.cmd {
			case "":
				if cmd != nil {
					t.Errorf("Cmd %q, want none", cmd)
				}
			case "bash":
				if !slices.Equal(cmd, []string{"bash"}) {
					t.Errorf("Cmd %q, want [bash]", cmd)
				}
			default:
				if len(cmd) != 1 || !strings.HasSuffix(cmd[0], tt.cmd) || !strings.HasPrefix(cmd[0], "/nix/store/") {
					t.Errorf("Cmd %q, want [/nix/store/…%s]", cmd, tt.cmd)
				}
			}
		})
	}
}

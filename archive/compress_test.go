package archive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

// bigTar writes a tar of about 9 MB: several chunks of either format, with
// incompressible and repetitive files, so that chunk boundaries fall inside
// files and inside matches.
func bigTar(tw *tar.Writer) error {
	r := rand.New(rand.NewPCG(7, 8))
	for i := range 12 {
		data := make([]byte, 700<<10+i*1013)
		if i%3 == 0 {
			for j := range data {
				data[j] = byte(r.Uint32())
			}
		} else {
			for j := range data {
				const text = "ELF\x00\x01 some text of a library "
				data[j] = text[(j+i)%len(text)] ^ byte(j>>12)
			}
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: "nix/store/f" + string(rune('a'+i)), Mode: 0o444, Size: int64(len(data)), ModTime: epoch}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := tw.Write(data); err != nil {
			return err
		}
	}
	return nil
}

func decompress(t *testing.T, f Format, blob []byte) []byte {
	t.Helper()
	var r io.Reader
	switch f {
	case Gzip:
		zr, err := gzip.NewReader(bytes.NewReader(blob))
		if err != nil {
			t.Fatal(err)
		}
		zr.Multistream(false)
		r = zr
	case Zstd:
		zr, err := zstd.NewReader(bytes.NewReader(blob))
		if err != nil {
			t.Fatal(err)
		}
		defer zr.Close()
		r = zr
	}
	raw, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("%s: %v", f, err)
	}
	return raw
}

func TestPackWith(t *testing.T) {
	var want []byte
	{
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		if err := bigTar(tw); err != nil {
			t.Fatal(err)
		}
		tw.Close()
		want = buf.Bytes()
	}
	for _, opts := range []Options{
		{Format: Gzip}, {Format: Gzip, Level: 1}, {Format: Gzip, Level: 9}, {Format: Gzip, Level: -2},
		{Format: Zstd}, {Format: Zstd, Level: 1}, {Format: Zstd, Level: 19},
	} {
		var first []byte
		var firstLayer Layer
		// The bytes must not depend on the number of goroutines.
		for _, conc := range []int{1, 2, 3, 8} {
			opts.Concurrency = conc
			var blob bytes.Buffer
			layer, err := PackWith(&blob, opts, bigTar)
			if err != nil {
				t.Fatalf("%+v: %v", opts, err)
			}
			if first == nil {
				first, firstLayer = blob.Bytes(), layer
				raw := decompress(t, opts.Format, first)
				if !bytes.Equal(raw, want) {
					t.Fatalf("%+v: decompressed stream differs from the tar", opts)
				}
				if layer.DiffID != digest.FromBytes(want) || layer.TarSize != int64(len(want)) {
					t.Errorf("%+v: DiffID/TarSize %s %d, want %s %d", opts, layer.DiffID, layer.TarSize, digest.FromBytes(want), len(want))
				}
				if layer.Digest != digest.FromBytes(first) || layer.Size != int64(len(first)) {
					t.Errorf("%+v: Digest/Size do not match the blob", opts)
				}
				continue
			}
			if !bytes.Equal(blob.Bytes(), first) || layer != firstLayer {
				t.Errorf("%+v: output differs from the one with concurrency 1", opts)
			}
		}
	}
}

func TestPackWithEmpty(t *testing.T) {
	for _, f := range []Format{Gzip, Zstd} {
		var blob bytes.Buffer
		layer, err := PackWith(&blob, Options{Format: f}, func(*tar.Writer) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		if raw := decompress(t, f, blob.Bytes()); len(raw) != 1024 || layer.TarSize != 1024 {
			t.Errorf("%s: empty tar is %d bytes (TarSize %d), want 1024", f, len(raw), layer.TarSize)
		}
	}
}

func TestPackWithOptionErrors(t *testing.T) {
	for _, opts := range []Options{
		{Format: Gzip, Level: 10}, {Format: Gzip, Level: -3}, {Format: Zstd, Level: 23},
		{Format: Zstd, Level: -1}, {Format: Format(7)},
	} {
		if _, err := PackWith(io.Discard, opts, func(*tar.Writer) error { return nil }); err == nil {
			t.Errorf("PackWith accepted %+v", opts)
		}
	}
}

type failingWriter struct{ after int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.after -= len(p); w.after < 0 {
		return 0, errBroken
	}
	return len(p), nil
}

var errBroken = errors.New("broken pipe")

func TestPackWithWriterError(t *testing.T) {
	for _, f := range []Format{Gzip, Zstd} {
		for _, after := range []int{0, 5, 100_000} {
			_, err := PackWith(&failingWriter{after: after}, Options{Format: f, Concurrency: 2}, bigTar)
			if !errors.Is(err, errBroken) {
				t.Errorf("%s, failing after %d bytes: error %v, want %v", f, after, err, errBroken)
			}
		}
	}
}

// Media types are the manifest package's (manifest.LayerMediaType).
func TestFormatNames(t *testing.T) {
	for f, name := range map[Format]string{Gzip: "gzip", Zstd: "zstd"} {
		if f.String() != name {
			t.Errorf("%d: %q, want %q", f, f, name)
		}
	}
}

package archive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
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

// The digests of bigTar's layer from before the compressor pool: the
// bytes of a layer must never change, or every cached layer would be
// packed and stored again (and a new klauspost/compress that changes them
// must be a conscious choice).
func TestPackWithGolden(t *testing.T) {
	for _, tc := range []struct {
		opts   Options
		digest digest.Digest
	}{
		{Options{Format: Gzip}, "sha256:e3e8900f9f85e16cc706cb3c7a614c142b47bb71a499cf5e8e85ede30f47d0f7"},
		{Options{Format: Gzip, Level: 1}, "sha256:0e961ae3fdd32a5438748f50bc28c6b989e46c4ca655155d3165075bc89cffe1"},
		{Options{Format: Zstd}, "sha256:6fc9a570f7a7590c5d1d3883030c608ff4bb58fcdeb571850ff9b472e4c948fd"},
		{Options{Format: Zstd, Level: 19}, "sha256:90d0e2b6f32c3a102a7338cf24cde25c702d57fa9c8141edc12b3427bff06ace"},
	} {
		l, err := PackWith(io.Discard, tc.opts, bigTar)
		if err != nil {
			t.Fatal(err)
		}
		if l.Digest != tc.digest {
			t.Errorf("%+v: digest %s, want %s", tc.opts, l.Digest, tc.digest)
		}
	}
}

// Layers packed at once share the process's pool: they never hold more
// chunk buffers than it has, they give every one back, and their bytes are
// those of a layer packed alone.
func TestPoolManyConcurrentPacks(t *testing.T) {
	p := defaultPool()
	optsList := []Options{{}, {Format: Zstd}, {Concurrency: 1}, {Level: 1, Concurrency: 3}}
	want := make([]digest.Digest, len(optsList))
	for i, opts := range optsList {
		l, err := PackWith(io.Discard, opts, bigTar)
		if err != nil {
			t.Fatal(err)
		}
		want[i] = l.Digest
	}
	p.peak.Store(p.inUse.Load())
	p.outPeak.Store(p.outInUse.Load())

	const packs = 24
	errs := make(chan error, packs)
	for i := range packs {
		go func() {
			opts, want := optsList[i%len(optsList)], want[i%len(optsList)]
			switch i % 8 {
			case 6: // fails writing to storage
				_, err := PackWith(&failingWriter{after: 1 << 20}, opts, bigTar)
				if !errors.Is(err, errBroken) {
					errs <- fmt.Errorf("failing writer: %v", err)
					return
				}
				errs <- nil
			case 7: // fails producing the tar halfway
				_, err := PackWith(io.Discard, opts, func(tw *tar.Writer) error {
					bigTar(tw)
					return errBroken
				})
				if !errors.Is(err, errBroken) {
					errs <- fmt.Errorf("failing tar: %v", err)
					return
				}
				errs <- nil
			default:
				l, err := PackWith(io.Discard, opts, bigTar)
				if err == nil && l.Digest != want {
					err = fmt.Errorf("%+v: digest %s packed concurrently, %s alone", opts, l.Digest, want)
				}
				errs <- err
			}
		}()
	}
	for range packs {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if peak := p.peak.Load(); peak > int64(PoolChunks()) || peak < 2 {
		t.Errorf("%d packs at once held at most %d chunks; the pool has %d", packs, peak, PoolChunks())
	}
	if peak := p.outPeak.Load(); peak > int64(PoolChunks()) {
		t.Errorf("%d packs at once held at most %d output buffers; the pool has %d chunks", packs, peak, PoolChunks())
	}
	if n, out := p.inUse.Load(), p.outInUse.Load(); n != 0 || out != 0 {
		t.Errorf("%d input and %d output buffers still held after every pack returned", n, out)
	}
	t.Logf("%d packs at once: at most %d input and %d output buffers held (pool: %d workers, %d chunks)",
		packs, p.peak.Load(), p.outPeak.Load(), PoolWorkers(), PoolChunks())
}

// A layer that wants a chunk when every one is taken waits for one to be
// given back; a pool of 3 chunks never has a fourth.
func TestPoolWaitsForAChunk(t *testing.T) {
	const chunks = 3
	p := newCompressorPool(2, chunks)
	waiting := make(chan struct{}, 1)
	p.onWait = func() { waiting <- struct{}{} }
	release := make(chan struct{})
	started := make(chan struct{}, chunks+1)
	// Each layer writes less than a chunk, so it holds the chunk it is
	// filling, and then waits for release.
	holding := func(tw *tar.Writer) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "f", Mode: 0o444, Size: 1000, ModTime: epoch}); err != nil {
			return err
		}
		if _, err := tw.Write(make([]byte, 1000)); err != nil {
			return err
		}
		tw.Flush()
		started <- struct{}{}
		<-release
		return nil
	}
	layers := make(chan Layer, chunks+1)
	pack := func() {
		l, err := packWith(p, io.Discard, Options{}, holding)
		if err != nil {
			t.Error(err)
		}
		layers <- l
	}
	for range chunks {
		go pack()
	}
	for range chunks {
		<-started
	}
	if n := p.inUse.Load(); n != chunks {
		t.Fatalf("%d layers filling a chunk each hold %d chunks", chunks, n)
	}
	go pack()
	<-waiting // the fourth layer's first write waits for a chunk
	if n := p.inUse.Load(); n != chunks {
		t.Fatalf("%d chunks held while a layer waits, want %d", n, chunks)
	}
	close(release)
	var first Layer
	for i := range chunks + 1 {
		l := <-layers
		if i == 0 {
			first = l
		} else if l != first {
			t.Errorf("layer %d differs: %+v, %+v", i, l, first)
		}
	}
	if peak, n := p.peak.Load(), p.inUse.Load(); peak != chunks || n != 0 {
		t.Errorf("peak %d chunks (want %d), %d still held (want 0)", peak, chunks, n)
	}
}

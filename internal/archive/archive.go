// Package archive turns store paths and synthesised files into image layers:
// deterministic tar streams, compressed and hashed in a single pass.
//
// It is pure streaming code: it reads the files it is pointed at and writes
// to the io.Writer it is given, runs no processes and does no HTTP. Output
// is reproducible — the same files give the same bytes and so the same
// digests — because every header field that could vary between machines or
// runs (owner, timestamps, order, hard-link state) is fixed:
//
//   - entries are sorted by name, parents before children;
//   - uid/gid 0 (but for what a synthesised entry's Entry.Uid and Gid
//     say, such as the home of the nonroot user), no user or group names;
//   - modification time 1970-01-01T00:00:01Z, as in the Nix store;
//   - the plain USTAR format, with PAX records only for an entry that
//     cannot be expressed in USTAR (such as a very long name);
//   - a gzip header without name or timestamp;
//   - compression split into fixed-size chunks (see Options), so the
//     compressed bytes do not depend on how many cores did the work.
//
// PackWith wraps one layer; StorePaths (or a Listing made by
// ListStorePaths, to know a layer's size before packing it) and Entries
// fill it.
// Customisation computes the entries of the customisation layer (/bin,
// /etc/passwd, …) that the original Nixery made Nix build.
package archive

import (
	"archive/tar"
	"crypto/sha256"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"
)

// Layer describes one packed layer.
type Layer struct {
	Digest  digest.Digest // sha256 of the compressed blob
	DiffID  digest.Digest // sha256 of the uncompressed tar
	Size    int64         // bytes of the compressed blob
	TarSize int64         // bytes of the uncompressed tar
}

// PackWith runs write to produce a tar stream, compresses it as opts says
// and streams the compressed bytes to w, computing DiffID, Digest, Size and
// TarSize in the same single pass: every file is read once, nothing is
// buffered whole, written to a temporary file or read twice.
//
// Compression runs on the process's compressor pool (see PoolChunks),
// shared by every layer packed at once, over fixed-size chunks of the tar
// stream; the chunks are written to w in order. The output depends only on
// the tar content, the format and the level — never on the concurrency or
// on other layers — so the same layer has the same digest on every machine.
//
// PackWith closes the tar writer itself; write must not. Writes to w happen
// on another goroutine than the caller's, but never concurrently, and all
// of them are done when PackWith returns.
func PackWith(w io.Writer, opts Options, write func(tw *tar.Writer) error) (Layer, error) {
	return packWith(defaultPool(), w, opts, write)
}

func packWith(p *compressorPool, w io.Writer, opts Options, write func(tw *tar.Writer) error) (Layer, error) {
	blob := sha256.New()
	size := &counter{}
	cw, err := newChunkWriter(p, io.MultiWriter(w, blob, size), opts)
	if err != nil {
		return Layer{}, err
	}
	diff := sha256.New()
	tarSize := &counter{}
	var tarOut io.Writer = io.MultiWriter(diff, tarSize, cw)
	if opts.Progress != nil {
		tarOut = io.MultiWriter(tarOut, progressWriter(opts.Progress))
	}
	tw := tar.NewWriter(tarOut)

	if err := write(tw); err != nil {
		cw.abort()
		return Layer{}, err
	}
	if err := tw.Close(); err != nil {
		cw.abort()
		return Layer{}, fmt.Errorf("closing tar: %w", err)
	}
	if err := cw.Close(); err != nil {
		return Layer{}, fmt.Errorf("closing %s stream: %w", opts.Format, err)
	}
	return Layer{
		Digest:  digest.NewDigest(digest.SHA256, blob),
		DiffID:  digest.NewDigest(digest.SHA256, diff),
		Size:    size.n,
		TarSize: tarSize.n,
	}, nil
}

// counter counts the bytes written through it.
type counter struct{ n int64 }

func (c *counter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

// progressWriter tells a function the length of every write.
type progressWriter func(n int64)

func (f progressWriter) Write(p []byte) (int, error) {
	f(int64(len(p)))
	return len(p), nil
}

// Package archive turns store paths and synthesised files into image layers:
// deterministic tar streams, gzip-compressed and hashed in a single pass.
//
// It is pure streaming code: it reads the files it is pointed at and writes
// to the io.Writer it is given, runs no processes and does no HTTP. Output
// is reproducible — the same files give the same bytes and so the same
// digests — because every header field that could vary between machines or
// runs (owner, timestamps, order, hard-link state) is fixed:
//
//   - entries are sorted by name, parents before children;
//   - uid/gid 0, no user or group names;
//   - modification time 1970-01-01T00:00:01Z, as in the Nix store;
//   - the plain USTAR format, with PAX records only for an entry that
//     cannot be expressed in USTAR (such as a very long name);
//   - a gzip header without name or timestamp.
//
// Pack wraps one layer; StorePaths and Entries fill it. Customisation
// computes the entries of the customisation layer (/bin, /etc/passwd, …)
// that the original Nixery made Nix build.
package archive

import (
	"archive/tar"
	"crypto/sha256"
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
)

// Layer describes one packed layer.
type Layer struct {
	Digest digest.Digest // sha256 of the compressed blob
	DiffID digest.Digest // sha256 of the uncompressed tar
	Size   int64         // bytes of the compressed blob
}

// Pack runs write to produce a tar stream, gzips it at level and streams
// the compressed bytes to w, computing DiffID, Digest and Size in the same
// single pass: nothing is buffered whole, written to a temporary file or
// read twice.
//
// level is a gzip level (1 fastest … 9 best, or one of the negative
// special levels of klauspost/compress/gzip); 0 means the default level,
// so uncompressed gzip cannot be asked for. The output depends only on the
// tar content and the level: the gzip header carries no name and no
// timestamp.
//
// Pack closes the tar writer itself; write must not.
func Pack(w io.Writer, level int, write func(tw *tar.Writer) error) (Layer, error) {
	if level == 0 {
		level = gzip.DefaultCompression
	}
	blob := sha256.New()
	size := &counter{}
	// The zero gzip.Header has no name, no comment, no modification time
	// and OS "unknown": nothing that depends on when or where we run.
	zw, err := gzip.NewWriterLevel(io.MultiWriter(w, blob, size), level)
	if err != nil {
		return Layer{}, fmt.Errorf("gzip level %d: %w", level, err)
	}
	diff := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(diff, zw))

	if err := write(tw); err != nil {
		return Layer{}, err
	}
	if err := tw.Close(); err != nil {
		return Layer{}, fmt.Errorf("closing tar: %w", err)
	}
	if err := zw.Close(); err != nil {
		return Layer{}, fmt.Errorf("closing gzip: %w", err)
	}
	return Layer{
		Digest: digest.NewDigest(digest.SHA256, blob),
		DiffID: digest.NewDigest(digest.SHA256, diff),
		Size:   size.n,
	}, nil
}

// counter counts the bytes written through it.
type counter struct{ n int64 }

func (c *counter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

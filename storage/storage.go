// Package storage keeps blobs (layers, configs, manifests) under their
// sha256 digest.
//
// A Backend is deliberately small: write a new blob, open one, ask its
// size. Optional abilities (for example redirecting clients to a URL) are
// separate interfaces discovered by type assertion, as in
// go-containerregistry's registry.
//
// Every write goes to a temporary name first; Commit verifies the digest
// of what was written and only then makes it visible under that digest, so
// a crash or an error never leaves a partial blob under a real name.
package storage

import (
	"bytes"
	"context"
	"errors"
	"io"
	"regexp"

	"github.com/opencontainers/go-digest"
)

// ErrNotFound is returned (wrapped) for a blob that does not exist.
var ErrNotFound = errors.New("blob not found")

// Backend stores content-addressed blobs.
type Backend interface {
	// Create starts writing a new blob.
	Create(ctx context.Context) (Writer, error)
	// Open opens the blob with digest d for reading; ErrNotFound if absent.
	Open(ctx context.Context, d digest.Digest) (Reader, error)
	// Stat returns the size of the blob with digest d; ErrNotFound if absent.
	Stat(ctx context.Context, d digest.Digest) (int64, error)
	// GetObject reads a small named object (a cache entry); ErrNotFound
	// if absent. Names are relative slash-separated paths such as
	// "manifests/<key>" (see ValidObjectName).
	GetObject(ctx context.Context, name string) ([]byte, error)
	// PutObject creates or replaces a named object atomically: a reader
	// sees the old content or the new, never a mix.
	PutObject(ctx context.Context, name string, data []byte) error
	// String names the backend and its location for logs.
	String() string
}

var objectNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*$`)

// ValidObjectName reports whether name can name an object: lower-case
// letters, digits, '.', '_' and '-' in slash-separated parts that do not
// start with a dot, so no name can escape its backend's object area.
func ValidObjectName(name string) bool {
	return len(name) <= 512 && objectNameRE.MatchString(name)
}

// Writer receives the bytes of a new blob.
type Writer interface {
	io.Writer
	// Commit checks that what was written has digest d and makes it
	// readable under d. If a blob with digest d exists already, the new
	// copy is dropped. After Commit the Writer is closed.
	Commit(d digest.Digest) error
	// Cancel discards what was written. Safe to call after Commit.
	Cancel() error
}

// Reader reads one blob; Seek makes Range requests cheap.
type Reader interface {
	io.ReadSeekCloser
	Size() int64
}

// Put stores data and returns its digest.
func Put(ctx context.Context, b Backend, data []byte) (digest.Digest, error) {
	d := digest.FromBytes(data)
	w, err := b.Create(ctx)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(w, bytes.NewReader(data)); err != nil {
		w.Cancel()
		return "", err
	}
	return d, w.Commit(d)
}

// Get reads a whole (small) blob.
func Get(ctx context.Context, b Backend, d digest.Digest) ([]byte, error) {
	r, err := b.Open(ctx, d)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

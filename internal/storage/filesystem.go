package storage

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// Filesystem stores blobs in a local directory:
//
//	<root>/blobs/sha256/<hex>   committed blobs
//	<root>/objects/<name>       named objects (cache entries)
//	<root>/tmp/                 blobs being written (same file system, so
//	                            the final rename is atomic)
//
// It needs no extended attributes, so any file system (tmpfs too) works.
//
// A name survives a crash once Commit or PutObject has returned: the data
// is synced before the rename, and the directory after it (and after
// creating a directory, its parent), since fsync(2) of a file makes its
// data durable but not the directory entry that names it.
type Filesystem struct {
	root string
	// syncDir is syncDir; tests wrap it to see that it is called.
	syncDir func(dir string) error
}

// NewFilesystem opens the storage in root, creating its directories if
// they are missing. It changes nothing else: other processes (a running
// server, `nixery gc`, `nixery build --local`) may be writing there, so
// leftovers of a process that died mid-write are only removed by
// DeleteTemporaries, once they are older than AbandonedAfter.
func NewFilesystem(root string) (*Filesystem, error) {
	return newFilesystem(root, syncDir)
}

func newFilesystem(root string, sync func(dir string) error) (*Filesystem, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	f := &Filesystem{root: abs, syncDir: sync}
	for _, dir := range []string{f.tmpDir(), filepath.Join(abs, "blobs", "sha256")} {
		if err := f.mkdirAll(dir); err != nil {
			return nil, fmt.Errorf("storage %s: %w", abs, err)
		}
	}
	return f, nil
}

// syncDir flushes a directory's entries (names created, renamed into or
// removed from it) to disk.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	return nil
}

// mkdirAll is os.MkdirAll that also syncs the parent of every directory
// it creates, so that a blob or object renamed into it later does not
// vanish with its directory in a crash. Creating concurrently with another
// process is fine: whoever finds the directory made syncs its parent too.
func (f *Filesystem) mkdirAll(dir string) error {
	info, err := os.Stat(dir)
	if err == nil {
		if !info.IsDir() {
			return fmt.Errorf("%s is not a directory", dir)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := f.mkdirAll(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return f.syncDir(parent)
}

func (f *Filesystem) String() string { return "filesystem " + f.root }

func (f *Filesystem) tmpDir() string { return filepath.Join(f.root, "tmp") }

func (f *Filesystem) path(d digest.Digest) (string, error) {
	if err := d.Validate(); err != nil || d.Algorithm() != digest.SHA256 {
		return "", fmt.Errorf("invalid digest %q", d)
	}
	return filepath.Join(f.root, "blobs", "sha256", d.Encoded()), nil
}

func (f *Filesystem) Create(ctx context.Context) (Writer, error) {
	file, err := os.CreateTemp(f.tmpDir(), "blob-")
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	h := sha256.New()
	return &fsWriter{fs: f, file: file, hash: h, w: io.MultiWriter(file, h)}, nil
}

func (f *Filesystem) Open(ctx context.Context, d digest.Digest) (Reader, error) {
	p, err := f.path(d)
	if err != nil {
		return nil, err
	}
	file, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", d, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	info, err := file.Stat()
	if err != nil {
		file.Close()
		return nil, fmt.Errorf("storage: %w", err)
	}
	return &fsReader{File: file, size: info.Size()}, nil
}

func (f *Filesystem) Stat(ctx context.Context, d digest.Digest) (int64, error) {
	p, err := f.path(d)
	if err != nil {
		return 0, err
	}
	info, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("%s: %w", d, ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("storage: %w", err)
	}
	return info.Size(), nil
}

func (f *Filesystem) objectPath(name string) (string, error) {
	if !ValidObjectName(name) {
		return "", fmt.Errorf("invalid object name %q", name)
	}
	return filepath.Join(f.root, "objects", filepath.FromSlash(name)), nil
}

func (f *Filesystem) GetObject(ctx context.Context, name string) ([]byte, error) {
	p, err := f.objectPath(name)
	if err != nil {
		return nil, err
	}
	file, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("object %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	defer file.Close()
	info, err := file.Stat()
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	data, err := readObject(name, info.Size(), file)
	if err != nil && !errors.Is(err, ErrTooLarge) {
		return nil, fmt.Errorf("storage: %w", err)
	}
	return data, err
}

func (f *Filesystem) PutObject(ctx context.Context, name string, data []byte) error {
	return f.writeObject(name, data, false)
}

// CreateObject creates the object only if it does not exist: the new
// file is linked to its name, which fails if the name exists.
func (f *Filesystem) CreateObject(ctx context.Context, name string, data []byte) error {
	return f.writeObject(name, data, true)
}

// writeObject writes data to a temporary file and renames it into place,
// or, exclusive, links it there (which never replaces an object).
func (f *Filesystem) writeObject(name string, data []byte, exclusive bool) error {
	p, err := f.objectPath(name)
	if err != nil {
		return err
	}
	if err := checkObjectSize(name, data); err != nil {
		return err
	}
	if err := f.mkdirAll(filepath.Dir(p)); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	tmp, err := os.CreateTemp(f.tmpDir(), "object-")
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("storage: writing object %s: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("storage: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	if exclusive {
		err = os.Link(tmp.Name(), p)
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("object %s: %w", name, ErrExists)
		}
	} else {
		err = os.Rename(tmp.Name(), p)
	}
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	if err := f.syncDir(filepath.Dir(p)); err != nil {
		return fmt.Errorf("storage: object %s: %w", name, err)
	}
	return nil
}

type fsReader struct {
	*os.File
	size int64
}

func (r *fsReader) Size() int64 { return r.size }

type fsWriter struct {
	fs   *Filesystem
	file *os.File
	hash hash.Hash
	w    io.Writer
	size int64
	done bool
}

func (w *fsWriter) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	w.size += int64(n)
	if err != nil {
		err = fmt.Errorf("storage: writing blob: %w", err)
	}
	return n, err
}

func (w *fsWriter) Commit(d digest.Digest) error {
	if w.done {
		return errors.New("storage: blob already committed or cancelled")
	}
	defer w.Cancel()
	target, err := w.fs.path(d)
	if err != nil {
		return err
	}
	if got := digest.NewDigest(digest.SHA256, w.hash); got != d {
		return fmt.Errorf("storage: blob digest is %s, expected %s", got, d)
	}
	// Data must be on disk before the name points at it, or a crash
	// could leave a short file under a real digest.
	if err := w.file.Sync(); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	if err := w.file.Close(); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	// Content-addressed: an existing copy of the same size is this blob
	// and is kept; one of another size is damaged (a crash before its
	// data reached the disk, a half-restored backup) and is replaced, as
	// the bucket backends do. The directory is synced either way, in case
	// the process that renamed the copy there has not done so yet.
	if info, err := os.Stat(target); err != nil || info.Size() != w.size {
		if err := os.Chmod(w.file.Name(), 0o644); err != nil {
			return fmt.Errorf("storage: %w", err)
		}
		if err := os.Rename(w.file.Name(), target); err != nil {
			return fmt.Errorf("storage: %w", err)
		}
	}
	if err := w.fs.syncDir(filepath.Dir(target)); err != nil {
		return fmt.Errorf("storage: blob %s: %w", d, err)
	}
	return nil
}

func (w *fsWriter) Cancel() error {
	if w.done {
		return nil
	}
	w.done = true
	w.file.Close()
	err := os.Remove(w.file.Name())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

var _ Backend = (*Filesystem)(nil)

func (f *Filesystem) ListBlobs(ctx context.Context, fn func(d digest.Digest, size int64, modTime time.Time) error) error {
	entries, err := os.ReadDir(filepath.Join(f.root, "blobs", "sha256"))
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	for _, e := range entries {
		d := digest.NewDigestFromEncoded(digest.SHA256, e.Name())
		if d.Validate() != nil {
			continue
		}
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted since the directory was read
		}
		if err != nil {
			return fmt.Errorf("storage: %w", err)
		}
		if err := fn(d, info.Size(), info.ModTime()); err != nil {
			return err
		}
	}
	return nil
}

func (f *Filesystem) ListObjects(ctx context.Context, prefix string, fn func(name string, modTime time.Time) error) error {
	base := filepath.Join(f.root, "objects")
	// Walk only the directory the prefix names ("layers/" → objects/layers),
	// not every object there is.
	start := base
	if dir := path.Dir(prefix + "x"); dir != "." && ValidObjectName(dir) {
		start = filepath.Join(base, filepath.FromSlash(dir))
	}
	err := filepath.WalkDir(start, func(p string, e fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if e.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(base, p)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		if !strings.HasPrefix(name, prefix) || !ValidObjectName(name) {
			return nil
		}
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		return fn(name, info.ModTime())
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("storage: listing objects: %w", err)
	}
	return nil
}

func (f *Filesystem) DeleteBlob(ctx context.Context, d digest.Digest) error {
	p, err := f.path(d)
	if err != nil {
		return err
	}
	return removeIfExists(p)
}

func (f *Filesystem) DeleteObject(ctx context.Context, name string) error {
	p, err := f.objectPath(name)
	if err != nil {
		return err
	}
	return removeIfExists(p)
}

// DeleteTemporaries removes temporary files last written before cutoff.
// A file's modification time moves with every write, so an upload that is
// still making progress is never older than the cutoff, whichever process
// writes it.
func (f *Filesystem) DeleteTemporaries(ctx context.Context, cutoff time.Time) (int, error) {
	entries, err := os.ReadDir(f.tmpDir())
	if err != nil {
		return 0, fmt.Errorf("storage: %w", err)
	}
	removed := 0
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return removed, err
		}
		info, err := e.Info()
		if err != nil || !info.ModTime().Before(cutoff) {
			continue
		}
		if err := removeIfExists(filepath.Join(f.tmpDir(), e.Name())); err != nil {
			return removed, err
		}
		removed++
	}
	return removed, nil
}

func removeIfExists(p string) error {
	err := os.Remove(p)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("storage: %w", err)
	}
	return nil
}

package storage_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nixery/nixery/internal/storage"
	"github.com/nixery/nixery/internal/storage/storagetest"
	"github.com/opencontainers/go-digest"
)

var prefixes atomic.Int64

// newS3 returns an S3 backend on srv with a prefix of its own, so each
// test sees an empty store.
func newS3(t *testing.T, srv *storagetest.Server, edit func(*storage.S3Config)) *storage.S3 {
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true") // never look for an instance role
	cfg := storage.S3Config{
		Bucket:          srv.Bucket,
		Prefix:          fmt.Sprintf("t%d/", prefixes.Add(1)),
		Region:          srv.Region,
		Endpoint:        srv.Endpoint,
		PathStyle:       true,
		AccessKeyID:     srv.AccessKey,
		SecretAccessKey: srv.SecretKey,
		PartSize:        5 << 20,
	}
	if edit != nil {
		edit(&cfg)
	}
	b, err := storage.NewS3(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestS3Suite(t *testing.T) {
	srv := storagetest.StartS3(t)
	storagetest.Run(t, func(t *testing.T) storage.Backend { return newS3(t, srv, nil) })
}

func TestS3Damaged(t *testing.T) {
	srv := storagetest.StartS3(t)
	storagetest.RunDamaged(t, func(t *testing.T) storage.Backend { return newS3(t, srv, nil) }, storagetest.Unchecked{Blob: storage.PutUnverified, Object: storage.PutObjectUnchecked})
}

func TestS3Temporaries(t *testing.T) {
	srv := storagetest.StartS3(t)
	storagetest.RunTemporaries(t, func(t *testing.T) storagetest.Shared {
		prefix := fmt.Sprintf("t%d/", prefixes.Add(1))
		open := func() storage.Backend {
			return newS3(t, srv, func(c *storage.S3Config) { c.Prefix = prefix })
		}
		return storagetest.Shared{Backend: open(), Open: open}
	})
}

func TestS3Redirect(t *testing.T) {
	srv := storagetest.StartS3(t)
	ctx := context.Background()
	b := newS3(t, srv, nil)
	d, err := storage.Put(ctx, b, []byte("redirect me"))
	if err != nil {
		t.Fatal(err)
	}
	url, ok, err := storage.RedirectURL(ctx, b, d)
	if err != nil || !ok {
		t.Fatalf("RedirectURL = %q, %v, %v", url, ok, err)
	}
	// The presigned URL works for a client without credentials.
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "redirect me" {
		t.Fatalf("GET presigned URL: %d %q", resp.StatusCode, body)
	}

	proxied := newS3(t, srv, func(c *storage.S3Config) { c.DisableRedirect = true })
	if url, ok, err := storage.RedirectURL(ctx, proxied, d); ok || err != nil {
		t.Fatalf("RedirectURL with redirects disabled = %q, %v, %v", url, ok, err)
	}
}

func TestS3Outage(t *testing.T) {
	srv := storagetest.StartS3(t)
	storagetest.RunOutage(t, srv, newS3(t, srv, nil))
}

func TestS3Hang(t *testing.T) {
	srv := storagetest.StartS3(t)
	storagetest.RunHang(t, srv, newS3(t, srv, func(c *storage.S3Config) {
		c.Timeout, c.TransferTimeout = time.Second, 2*time.Second
	}))
}

// Blobs above S3's single-copy limit (5 GiB) are published with a
// multipart copy; a lowered limit takes that path here.
func TestS3CopyInParts(t *testing.T) {
	srv := storagetest.StartS3(t)
	b := newS3(t, srv, nil)
	storage.SetS3CopyLimit(b, 1<<20, 5<<20) // three parts
	ctx := context.Background()
	data := storagetest.Data(3, storagetest.LargeSize)
	w, err := b.Create(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	d := digest.FromBytes(data)
	if err := w.Commit(d); err != nil {
		t.Fatal(err)
	}
	if got, err := storage.Get(ctx, b, d); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get: %d bytes, %v", len(got), err)
	}
}

// A multipart copy that is interrupted or fails is aborted: no parts are
// left stored (and billed) under the blob's key, nothing is published.
// When even the abort cannot reach the service, DeleteTemporaries of
// another process aborts the copy later.
func TestS3CopyInPartsAborted(t *testing.T) {
	srv := storagetest.StartS3(t)
	data := storagetest.Data(5, storagetest.LargeSize)
	d := digest.FromBytes(data)
	for _, tc := range []struct {
		name string
		// interrupt is called before part 2 is copied.
		interrupt func(cancel context.CancelFunc)
		// leftovers: what DeleteTemporaries finds afterwards (the copy
		// and the temporary object, when the service was down).
		leftovers int
	}{
		{"cancelled", func(cancel context.CancelFunc) { cancel() }, 0},
		{"service down", func(context.CancelFunc) { srv.Stop() }, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prefix := fmt.Sprintf("t%d/", prefixes.Add(1))
			b := newS3(t, srv, func(c *storage.S3Config) { c.Prefix = prefix })
			storage.SetS3CopyLimit(b, 1<<20, 5<<20)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			storage.SetS3BeforeCopyPart(b, func(part int32) {
				if part == 2 {
					tc.interrupt(cancel)
				}
			})
			w, err := b.Create(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(data); err != nil {
				t.Fatal(err)
			}
			if err := w.Commit(d); err == nil {
				t.Fatal("Commit succeeded although the copy was interrupted")
			}
			srv.Start()

			bg := context.Background()
			if _, err := b.Stat(bg, d); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("Stat after an interrupted copy: %v", err)
			}
			uploads, err := storage.S3Uploads(bg, b)
			if err != nil {
				t.Fatal(err)
			}
			if tc.leftovers == 0 && len(uploads) != 0 {
				t.Fatalf("multipart uploads left after an interrupted copy: %v", uploads)
			}
			other := newS3(t, srv, func(c *storage.S3Config) { c.Prefix = prefix })
			n, err := other.DeleteTemporaries(bg, time.Now().Add(time.Minute))
			if err != nil || n != tc.leftovers {
				t.Fatalf("DeleteTemporaries = %d, %v; want %d (uploads were %v)", n, err, tc.leftovers, uploads)
			}
			if uploads, err := storage.S3Uploads(bg, b); err != nil || len(uploads) != 0 {
				t.Fatalf("multipart uploads after DeleteTemporaries: %v, %v", uploads, err)
			}
			// The storage works as before: the blob can be published.
			storage.SetS3BeforeCopyPart(b, nil)
			w, err = b.Create(bg)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(data); err != nil {
				t.Fatal(err)
			}
			if err := w.Commit(d); err != nil {
				t.Fatal(err)
			}
			if got, err := storage.Get(bg, b, d); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("Get: %d bytes, %v", len(got), err)
			}
		})
	}
}

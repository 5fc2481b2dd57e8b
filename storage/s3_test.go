package storage_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nixery/nixery/storage"
	"github.com/nixery/nixery/storage/storagetest"
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

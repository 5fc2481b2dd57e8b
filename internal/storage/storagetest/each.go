package storagetest

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/nixery/nixery/internal/storage"
)

var prefixes atomic.Int64

// EachBackend runs fn against every backend: the filesystem, a real S3
// server (versitygw) and a real GCS emulator (fake-gcs-server), each
// started on 127.0.0.1. Every call of newStore is a fresh, empty store
// (on the buckets, a prefix of its own).
func EachBackend(t *testing.T, fn func(t *testing.T, newStore func() storage.Backend)) {
	t.Run("filesystem", func(t *testing.T) {
		fn(t, func() storage.Backend {
			b, err := storage.NewFilesystem(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return b
		})
	})
	t.Run("s3", func(t *testing.T) {
		srv := StartS3(t)
		t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
		fn(t, func() storage.Backend {
			b, err := storage.NewS3(context.Background(), storage.S3Config{
				Bucket: srv.Bucket, Prefix: fmt.Sprintf("c%d/", prefixes.Add(1)), Region: srv.Region,
				Endpoint: srv.Endpoint, PathStyle: true, AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey,
			})
			if err != nil {
				t.Fatal(err)
			}
			return b
		})
	})
	t.Run("gcs", func(t *testing.T) {
		srv := StartGCS(t)
		fn(t, func() storage.Backend {
			b, err := storage.NewGCS(context.Background(), storage.GCSConfig{
				Bucket: srv.Bucket, Prefix: fmt.Sprintf("c%d/", prefixes.Add(1)), Endpoint: srv.Endpoint,
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close() })
			return b
		})
	})
}

package storage

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"

	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// SetS3CopyLimit lowers the size above which S3 copies go in parts, and
// the size of those parts, so tests can take that path without 5 GiB blobs.
func SetS3CopyLimit(s *S3, limit, part int64) { s.api.copyLimit, s.api.copyPart = limit, part }

// SetS3BeforeCopyPart sets the hook called before each part of a
// multipart copy.
func SetS3BeforeCopyPart(s *S3, hook func(part int32)) { s.api.beforeCopyPart = hook }

// S3Uploads lists the keys of the multipart uploads in progress under the
// backend's prefix.
func S3Uploads(ctx context.Context, s *S3) ([]string, error) {
	out, err := s.api.client.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: &s.api.cfg.Bucket, Prefix: &s.prefix})
	if err != nil {
		return nil, err
	}
	var keys []string
	for _, up := range out.Uploads {
		keys = append(keys, *up.Key)
	}
	return keys, nil
}

// LeaveGCSTemporary does what a process that dies between the end of a
// large upload and its publication leaves behind: a finished temporary
// object.
func LeaveGCSTemporary(ctx context.Context, g *GCS, data []byte) error {
	u, err := g.api.startUpload(ctx, tmpKey(g.prefix))
	if err != nil {
		return err
	}
	if err := u.write(data); err != nil {
		return err
	}
	_, err = u.finish()
	return err
}

// PutUnverified stores data under d as it is, without checking it
// (storagetest.Unchecked.Blob).
func PutUnverified(b Backend, d digest.Digest, data []byte) error {
	switch b := b.(type) {
	case *Filesystem:
		p, err := b.path(d)
		if err != nil {
			return err
		}
		return os.WriteFile(p, data, 0o644)
	case *S3:
		return b.putBlob(context.Background(), d, data)
	case *GCS:
		return b.putBlob(context.Background(), d, data)
	}
	return fmt.Errorf("PutUnverified: %T", b)
}

// PutObjectUnchecked stores data under name whatever its size
// (storagetest.Unchecked.Object).
func PutObjectUnchecked(b Backend, name string, data []byte) error {
	switch b := b.(type) {
	case *Filesystem:
		p, err := b.objectPath(name)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		return os.WriteFile(p, data, 0o644)
	case *S3:
		return putObjectUnchecked(&b.bucketStore, name, data)
	case *GCS:
		return putObjectUnchecked(&b.bucketStore, name, data)
	}
	return fmt.Errorf("PutObjectUnchecked: %T", b)
}

func putObjectUnchecked(s *bucketStore, name string, data []byte) error {
	key, err := objectKey(s.prefix, name)
	if err != nil {
		return err
	}
	return s.bucket.put(context.Background(), "put object "+name, key, data, false)
}

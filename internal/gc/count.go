package gc

import (
	"context"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/nixery/nixery/internal/storage"
)

// countingStore counts the requests a collection makes, for its report.
type countingStore struct {
	storage.Backend
	mu       sync.Mutex
	requests int64
}

func (s *countingStore) count() {
	s.mu.Lock()
	s.requests++
	s.mu.Unlock()
}

func (s *countingStore) Open(ctx context.Context, d digest.Digest) (storage.Reader, error) {
	s.count()
	return s.Backend.Open(ctx, d)
}
func (s *countingStore) Stat(ctx context.Context, d digest.Digest) (int64, error) {
	s.count()
	return s.Backend.Stat(ctx, d)
}
func (s *countingStore) GetObject(ctx context.Context, name string) ([]byte, error) {
	s.count()
	return s.Backend.GetObject(ctx, name)
}
func (s *countingStore) PutObject(ctx context.Context, name string, data []byte) error {
	s.count()
	return s.Backend.PutObject(ctx, name, data)
}
func (s *countingStore) ListBlobs(ctx context.Context, fn func(digest.Digest, int64, time.Time) error) error {
	s.count()
	return s.Backend.ListBlobs(ctx, fn)
}
func (s *countingStore) ListObjects(ctx context.Context, prefix string, fn func(string, time.Time) error) error {
	s.count()
	return s.Backend.ListObjects(ctx, prefix, fn)
}
func (s *countingStore) DeleteBlob(ctx context.Context, d digest.Digest) error {
	s.count()
	return s.Backend.DeleteBlob(ctx, d)
}
func (s *countingStore) DeleteObject(ctx context.Context, name string) error {
	s.count()
	return s.Backend.DeleteObject(ctx, name)
}
func (s *countingStore) DeleteTemporaries(ctx context.Context, cutoff time.Time) (int, error) {
	s.count()
	return s.Backend.DeleteTemporaries(ctx, cutoff)
}

var _ storage.Backend = (*countingStore)(nil)

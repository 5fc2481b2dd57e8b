package builder

import (
	"context"
	"errors"
	"time"

	"github.com/nixery/nixery/internal/storage"
)

// artifactsRetry is how long after a failure to make an image's artifacts
// its pulls leave them alone before trying again (an outage of storage
// must not turn every pull into a failing attempt and a log line).
const artifactsRetry = time.Minute

// artifactsOf makes sure the image of key, found in the cache, has its
// artifacts: once per process and entry, at its first pull (for an image
// built before artifacts existed, or whose making failed). A failure is
// logged, never the pull's: the image is served all the same.
func (b *Builder) artifactsOf(ctx context.Context, key string, h *hotEntry) {
	if b.Artifacts == nil {
		return
	}
	next := h.artifacts.Load()
	now := time.Now().UnixNano()
	if next < 0 || now < next || !h.artifacts.CompareAndSwap(next, now+int64(artifactsRetry)) {
		return // made, failed lately, or another pull is at it
	}
	d, err := b.Metadata().Details(ctx, key)
	if errors.Is(err, storage.ErrNotFound) {
		// No details, nothing to describe: an image whose details were
		// never stored is rebuilt when it expires, with them.
		h.artifacts.Store(-1)
		return
	}
	if err == nil {
		err = b.Artifacts.Ensure(ctx, d)
	}
	if err != nil {
		b.logger().Warn("image artifacts not made", "key", key, "err", err)
		return
	}
	h.artifacts.Store(-1)
}

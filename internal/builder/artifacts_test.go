package builder

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/nixery/nixery/internal/manifest"
	"github.com/nixery/nixery/internal/metadata"
	"github.com/nixery/nixery/internal/source"
)

// recordingArtifacts counts the images it is asked to make artifacts for,
// failing while fail is set.
type recordingArtifacts struct {
	mu      sync.Mutex
	details []*metadata.Details
	fail    bool
}

func (r *recordingArtifacts) Ensure(_ context.Context, d *metadata.Details) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.details = append(r.details, d)
	if r.fail {
		return errors.New("signing key unreadable")
	}
	return nil
}

func (r *recordingArtifacts) calls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.details)
}

// A build makes its image's artifacts from the details it stored, before
// the image is announced; later pulls from the same process ask no more.
// A process that finds the image built by another (or by an older
// Nixery) ensures them at its first pull, once; a failure never fails
// the pull, and is not retried by every pull after it.
func TestArtifactsOfEveryImage(t *testing.T) {
	ctx := context.Background()
	pkgs := demoSet(t)
	storePath := t.TempDir()
	req := request(t, "shell/hello", "latest")

	made := &recordingArtifacts{}
	first := newBuilder(t, source.PathSource{Path: pkgs}, storePath)
	first.Artifacts = made
	_, d, err := first.Manifest(ctx, req, manifest.OCIManifest)
	if err != nil {
		t.Fatal(err)
	}
	if made.calls() != 1 {
		t.Fatalf("the build asked for artifacts %d times, want 1", made.calls())
	}
	if got := made.details[0]; got.Manifests[manifest.OCIManifest] != d || got.Name != "shell/hello" || len(got.Closure) == 0 {
		t.Errorf("artifacts asked for %+v, want the details of %s", got, d)
	}
	for range 3 {
		if _, _, err := first.Manifest(ctx, req, manifest.DockerManifest); err != nil {
			t.Fatal(err)
		}
	}
	if made.calls() != 2 {
		// One more: the first pull from the cache checks once (the
		// build's own call made them; the entry in memory is new).
		t.Errorf("after warm pulls: %d calls, want 2", made.calls())
	}

	failing := &recordingArtifacts{fail: true}
	second := newBuilder(t, source.PathSource{Path: pkgs}, storePath)
	second.Artifacts = failing
	for range 3 {
		if _, got, err := second.Manifest(ctx, req, manifest.OCIManifest); err != nil || got != d {
			t.Fatalf("pull from the cache: %s, %v; want %s despite the failing artifacts", got, err, d)
		}
	}
	if failing.calls() != 1 {
		t.Errorf("a failing Ensure was called %d times by 3 pulls, want 1 (then not before %s)", failing.calls(), artifactsRetry)
	}
	// Once the retry time has come, the next pull tries again.
	_, key, err := second.resolve(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	h, err := second.cachedEntry(ctx, key)
	if err != nil || h == nil {
		t.Fatalf("entry: %v", err)
	}
	h.artifacts.Store(0)
	failing.mu.Lock()
	failing.fail = false
	failing.mu.Unlock()
	for range 2 {
		if _, _, err := second.Manifest(ctx, req, manifest.OCIManifest); err != nil {
			t.Fatal(err)
		}
	}
	if failing.calls() != 2 {
		t.Errorf("after the retry time: %d calls, want 2 (one retry that succeeds, then none)", failing.calls())
	}
}

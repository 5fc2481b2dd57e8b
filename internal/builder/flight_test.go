package builder

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nixery/nixery/internal/manifest"
	"github.com/nixery/nixery/internal/nix"
	"github.com/nixery/nixery/internal/source"
)

// A watcher that arrives after a build's final event, before its flight
// has ended, gets the whole story and an end (it used to wait forever).
func TestWatcherAtTheEndOfABuild(t *testing.T) {
	b := newBuilder(t, source.PathSource{Path: demoSet(t)}, t.TempDir())
	req := request(t, "hello", "latest")
	var last Event
	watched := make(chan struct{})
	b.beforeFinish = func() {
		defer close(watched)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		ch, err := b.Watch(ctx, req)
		if err != nil {
			t.Error(err)
			return
		}
		for e := range ch {
			last = e
		}
		if ctx.Err() != nil {
			t.Error("the late watcher waited until its deadline")
		}
	}
	if _, _, err := b.Manifest(context.Background(), req, manifest.OCIManifest); err != nil {
		t.Fatal(err)
	}
	<-watched
	if last.Kind != "done" {
		t.Errorf("the late watcher's last event is %+v, want done", last)
	}
}

// A failed build is remembered for FailureTTL: the same request gets the
// same error without running Nix again; after it, Nix runs again.
func TestFailuresAreRemembered(t *testing.T) {
	b := newBuilder(t, source.PathSource{Path: demoSet(t)}, t.TempDir())
	ctx := context.Background()
	req := request(t, "nosuchpackage", "latest")
	var unknown *nix.UnknownPackagesError
	for range 3 {
		if _, _, err := b.Manifest(ctx, req, manifest.OCIManifest); !errors.As(err, &unknown) {
			t.Fatalf("got %v, want unknown packages", err)
		}
	}
	if n := b.Stats().NixBuilds.Load(); n != 1 {
		t.Errorf("three requests ran Nix %d times, want 1", n)
	}
	b.failures.put(b.mustKeyFor(t, "nosuchpackage"), unknown, time.Now()) // the memory ends
	if _, _, err := b.Manifest(ctx, req, manifest.OCIManifest); !errors.As(err, &unknown) {
		t.Fatalf("got %v", err)
	}
	if n := b.Stats().NixBuilds.Load(); n != 2 {
		t.Errorf("after the failure expired Nix ran %d times in all, want 2", n)
	}
}

// Admit is asked only when a request would start a new build.
func TestAdmitOnlyForNewBuilds(t *testing.T) {
	b := newBuilder(t, source.PathSource{Path: demoSet(t)}, t.TempDir())
	var asked atomic.Int64
	refuse := errors.New("over the limit")
	b.Admit = func(context.Context) error {
		if asked.Add(1) > 1 {
			return refuse
		}
		return nil
	}
	ctx := context.Background()
	if _, _, err := b.Manifest(ctx, request(t, "hello", "latest"), manifest.OCIManifest); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Manifest(ctx, request(t, "hello", "latest"), manifest.DockerManifest); err != nil {
		t.Errorf("a cached image was refused: %v", err)
	}
	if _, _, err := b.Manifest(ctx, request(t, "jq", "latest"), manifest.OCIManifest); !errors.Is(err, refuse) {
		t.Errorf("a second new build: %v, want refused", err)
	}
	if n := asked.Load(); n != 2 {
		t.Errorf("Admit asked %d times, want 2 (two new builds, no cache hit)", n)
	}
}

// Usable is asked, with the package set, only when a request would
// start a new build; a refusal runs no Nix and is not remembered as the
// build's failure (the source may be fixed at any time).
func TestUsableOnlyForNewBuilds(t *testing.T) {
	b := newBuilder(t, source.PathSource{Path: demoSet(t)}, t.TempDir())
	ctx := context.Background()
	if _, _, err := b.Manifest(ctx, request(t, "hello", "latest"), manifest.OCIManifest); err != nil {
		t.Fatal(err)
	}
	refuse := errors.New("the package set cannot be evaluated")
	var asked []string
	b.Usable = func(src source.Resolved) error {
		asked = append(asked, src.Identity)
		return refuse
	}
	if _, _, err := b.Manifest(ctx, request(t, "hello", "latest"), manifest.DockerManifest); err != nil {
		t.Errorf("a cached image was refused: %v", err)
	}
	builds := b.Stats().NixBuilds.Load()
	if _, _, err := b.Manifest(ctx, request(t, "jq", "latest"), manifest.OCIManifest); !errors.Is(err, refuse) {
		t.Errorf("a new build: %v, want refused", err)
	}
	if n := b.Stats().NixBuilds.Load(); n != builds {
		t.Errorf("a refused build ran Nix")
	}
	if len(asked) != 1 || !strings.HasPrefix(asked[0], "path:") {
		t.Errorf("Usable asked for %v, want once, for the path's package set", asked)
	}
	b.Usable = nil
	if _, _, err := b.Manifest(ctx, request(t, "jq", "latest"), manifest.OCIManifest); err != nil {
		t.Errorf("once usable again: %v", err)
	}
}

// An image that lost a blob (deleted by hand, a broken disk) is rebuilt
// when a process loads it from storage, not served broken; an entry
// deleted in storage is dropped from memory within the re-check time.
func TestLostBlobsAndEntriesHeal(t *testing.T) {
	pkgs := demoSet(t)
	root := t.TempDir()
	ctx := context.Background()
	req := request(t, "hello", "latest")
	first := newBuilder(t, source.PathSource{Path: pkgs}, root)
	data, _, err := first.Manifest(ctx, req, manifest.OCIManifest)
	if err != nil {
		t.Fatal(err)
	}
	refs, err := manifest.References(data)
	if err != nil {
		t.Fatal(err)
	}
	lost := refs[len(refs)-1]
	if err := os.Remove(filepath.Join(root, "blobs", "sha256", lost.Encoded())); err != nil {
		t.Fatal(err)
	}

	second := newBuilder(t, source.PathSource{Path: pkgs}, root)
	if _, _, err := second.Manifest(ctx, req, manifest.OCIManifest); err != nil {
		t.Fatal(err)
	}
	if n := second.Stats().NixBuilds.Load(); n != 1 {
		t.Errorf("an image with a lost blob was served from the cache (%d Nix builds)", n)
	}
	if _, err := second.Storage.Stat(ctx, lost); err != nil {
		t.Errorf("the lost blob was not packed again: %v", err)
	}

	// The entry goes (as gc deletes it); the process holding it in
	// memory notices at its next re-check and builds again.
	second.recheck = time.Nanosecond
	key := second.mustKeyFor(t, "hello")
	if err := second.Storage.DeleteObject(ctx, "manifests/"+key); err != nil {
		t.Fatal(err)
	}
	if _, _, err := second.Manifest(ctx, req, manifest.OCIManifest); err != nil {
		t.Fatal(err)
	}
	if n := second.Stats().NixBuilds.Load(); n != 2 {
		t.Errorf("a deleted entry was served from memory (%d Nix builds in all, want 2)", n)
	}
}

func (b *Builder) mustKeyFor(t *testing.T, name string) string {
	t.Helper()
	_, key, err := b.resolve(context.Background(), request(t, name, "latest"))
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// Drain: no new builds (a retryable error), builds in flight finish and
// can still be joined, and Drain returns when they have.
func TestDrain(t *testing.T) {
	b := newBuilder(t, source.PathSource{Path: demoSet(t)}, t.TempDir())
	ctx := context.Background()
	started, release := make(chan struct{}), make(chan struct{})
	b.beforeFinish = func() { close(started); <-release }
	first := make(chan error, 1)
	go func() {
		_, _, err := b.Manifest(ctx, request(t, "hello", "latest"), manifest.OCIManifest)
		first <- err
	}()
	<-started // the build is at its very end, still in flight
	drained := make(chan error, 1)
	go func() { drained <- b.Drain(ctx) }()
	for {
		b.drainMu.Lock()
		d := b.draining
		b.drainMu.Unlock()
		if d {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if _, _, err := b.Manifest(ctx, request(t, "jq", "latest"), manifest.OCIManifest); !errors.Is(err, ErrDraining) {
		t.Errorf("a new build while draining: %v, want ErrDraining", err)
	}
	select {
	case err := <-drained:
		t.Fatalf("Drain returned (%v) while a build was in flight", err)
	default:
	}
	close(release)
	if err := <-first; err != nil {
		t.Errorf("the build in flight: %v", err)
	}
	if err := <-drained; err != nil {
		t.Errorf("Drain: %v", err)
	}
}

// An image of packages resolved before runs no evaluation, and is the
// same image, byte for byte, as one evaluated afresh.
func TestResolvedPackagesNeedNoEvaluation(t *testing.T) {
	pkgs := demoSet(t)
	ctx := context.Background()
	b := newBuilder(t, source.PathSource{Path: pkgs}, t.TempDir())
	for _, name := range []string{"hello", "jq"} {
		if _, _, err := b.Manifest(ctx, request(t, name, "latest"), manifest.OCIManifest); err != nil {
			t.Fatal(err)
		}
	}
	_, known, err := b.Manifest(ctx, request(t, "hello/jq", "latest"), manifest.OCIManifest)
	if err != nil {
		t.Fatal(err)
	}
	if e, r := b.Stats().Evaluations.Load(), b.Stats().Resolved.Load(); e != 2 || r != 1 {
		t.Errorf("%d evaluations and %d builds from resolved packages, want 2 and 1", e, r)
	}
	fresh := newBuilder(t, source.PathSource{Path: pkgs}, t.TempDir())
	_, evaluated, err := fresh.Manifest(ctx, request(t, "hello/jq", "latest"), manifest.OCIManifest)
	if err != nil {
		t.Fatal(err)
	}
	if fresh.Stats().Evaluations.Load() != 1 {
		t.Fatalf("the fresh builder did not evaluate")
	}
	if known != evaluated {
		t.Errorf("resolved before: %s; evaluated: %s — the same image must have the same digest", known, evaluated)
	}
	// A moving source's resolutions last the cache time only.
	b.CacheTTL = time.Nanosecond
	if _, _, err := b.Manifest(ctx, request(t, "jq/hello/hello", "latest"), manifest.OCIManifest); err != nil {
		t.Fatal(err)
	}
	if e := b.Stats().Evaluations.Load(); e != 3 {
		t.Errorf("after the cache time: %d evaluations, want 3", e)
	}
}

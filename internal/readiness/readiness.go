// Package readiness answers the probes of load balancers and
// orchestrators: /healthz (the process is alive and serving) and /readyz
// (it can build and serve images: Nix runs, storage answers, the disks
// have room, the TLS certificate has not expired; and it is not shutting
// down).
//
// Readiness is checked in the background by Run, every interval, each
// check with its own context and timeout. /readyz only reads the last
// result: a probe costs nothing, starts no process, and never uses its
// request's context, so a probe that is aborted cannot turn a healthy
// replica "not ready".
package readiness

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nixery/nixery/internal/certs"
	"github.com/nixery/nixery/internal/every"
	"github.com/nixery/nixery/internal/metadata"
	"github.com/nixery/nixery/internal/nix"
	"github.com/nixery/nixery/internal/storage"
)

// Readiness checks (docs/operating.md, "For the people who run it").
const (
	// interval is the pause between two background checks.
	interval = 5 * time.Second
	// timeout bounds one check (Nix's version, one storage read).
	timeout = 10 * time.Second
	// stale: a result older than this means the checker is stuck, which
	// is reported as not ready.
	stale = 3 * (interval + timeout)
	// firstWait is how long a probe that comes before the first check
	// has finished (just after start-up) waits for it.
	firstWait = 2 * time.Second
	// defaultMinFree is the free space below which a disk counts as full:
	// the file system of the Nix store (a build writes its outputs there)
	// and that of filesystem storage (layers are written there).
	defaultMinFree = 1 << 30
	// nixStore is where Nix keeps store paths.
	nixStore = "/nix/store"
)

// Checker answers /healthz and /readyz. Its zero value with Store set
// checks Nix and storage, and no disk.
type Checker struct {
	Store storage.Backend
	// Disks are directories whose file systems need some bytes free.
	Disks []Disk
	// Private: the instance needs a login, but the probes do not, so
	// anyone who reaches the port may read /readyz. It then names only
	// the kind of problem ("storage is not reachable"); the details
	// (storage errors, paths, free space) are in the log.
	Private bool
	// Logger gets each change of the result (nil: slog.Default()).
	Logger *slog.Logger
	// TLS, if set, is the certificate the server presents. Once it has
	// expired the server is not ready (clients refuse it). Files that
	// changed into a pair that is not usable are a warning: the pair
	// loaded before is still served, so the replica stays ready (every
	// replica of a fleet reads the same Secret, and would go unready at
	// once).
	TLS *certs.Pair

	// draining is set on SIGTERM (Drain): the replica is not ready any
	// more, so that the load balancer stops sending it requests at once.
	draining atomic.Bool
	// statfs returns the bytes available to Nixery on the file system
	// holding path (nil: freeBytes; tests inject a full disk).
	statfs func(path string) (uint64, error)

	mu      sync.Mutex
	checked time.Time     // of the last result; zero before the first
	reason  string        // why not ready; "" if ready
	kind    string        // the kind of reason, without details
	first   chan struct{} // closed when the first result is in
}

// Drain makes the replica not ready from now on: it is shutting down.
func (c *Checker) Drain() { c.draining.Store(true) }

// firstResult returns a channel closed once the first result is in.
func (c *Checker) firstResult() chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.first == nil {
		c.first = make(chan struct{})
	}
	return c.first
}

// Healthz answers /healthz: the process is alive and serving.
func (c *Checker) Healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
}

// Readyz answers /readyz from the last result: 200 "ready", or 503
// "not ready: " and why.
func (c *Checker) Readyz(w http.ResponseWriter, r *http.Request) {
	// Just after start-up, wait a little for the first result rather
	// than answer "not checked yet". The request's context only ends the
	// wait; it never reaches a check.
	select {
	case <-c.firstResult():
	default:
		t := time.NewTimer(firstWait)
		select {
		case <-c.firstResult():
		case <-r.Context().Done():
		case <-t.C:
		}
		t.Stop()
	}
	reason := c.status(time.Now())
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if reason != "" {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "not ready: "+reason)
	} else {
		fmt.Fprintln(w, "ready")
	}
	if c.TLS != nil && c.TLS.Problem() != nil {
		// The details (the files' names, what is wrong) are in the log.
		fmt.Fprintf(w, "warning: the TLS certificate files changed into a pair that is not usable (see the log); the certificate loaded before is served, valid until %s\n",
			c.TLS.Leaf().NotAfter.UTC().Format(time.RFC3339))
	}
}

// status returns why the server is not ready at now, from the last check,
// as /readyz shows it.
func (c *Checker) status(now time.Time) string {
	if c.draining.Load() {
		return "shutting down"
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.checked.IsZero():
		return "starting: readiness not checked yet"
	case now.Sub(c.checked) > stale:
		return fmt.Sprintf("readiness last checked %s ago", now.Sub(c.checked).Round(time.Second))
	case c.Private:
		return c.kind
	}
	return c.reason
}

// Run checks readiness at once and then every interval until ctx ends.
func (c *Checker) Run(ctx context.Context) {
	every.Run(ctx, 0, every.Fixed(interval), c.update)
}

// update runs one check and records its result, unless ctx ended meanwhile
// (shutting down is not a verdict on Nix or storage).
func (c *Checker) update(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	kind, reason := c.check(cctx)
	if ctx.Err() != nil {
		return
	}
	first := c.firstResult()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.checked.IsZero() {
		close(first)
	}
	if reason != c.reason {
		log := c.Logger
		if log == nil {
			log = slog.Default()
		}
		if reason != "" {
			log.Warn("not ready", "reason", reason)
		} else if !c.checked.IsZero() {
			log.Info("ready again")
		}
	}
	c.kind, c.reason, c.checked = kind, reason, time.Now()
}

// check returns why the server is not ready, or "": its kind, and the
// kind with the details.
func (c *Checker) check(ctx context.Context) (kind, reason string) {
	if c.TLS != nil {
		if end := c.TLS.Leaf().NotAfter; time.Now().After(end) {
			return "TLS certificate expired", "TLS certificate expired at " + end.UTC().Format(time.RFC3339) + ": renew the files of NIXERY_TLS_CERT and NIXERY_TLS_KEY"
		}
	}
	if _, err := nix.Version(ctx); err != nil {
		return "nix is not usable", "nix is not usable: " + err.Error()
	}
	// A read of an object that does not exist: "not found" means storage
	// answered.
	if err := metadata.New(c.Store, nil).Probe(ctx); err != nil {
		return "storage is not reachable", "storage is not reachable: " + err.Error()
	}
	statfs := c.statfs
	if statfs == nil {
		statfs = freeBytes
	}
	for _, d := range c.Disks {
		free, err := statfs(d.Dir)
		if err != nil {
			return "free space unknown", fmt.Sprintf("free space of %s unknown: %v", d.Dir, err)
		}
		if free < d.MinFree {
			return "disk full", fmt.Sprintf("disk full: %s has %s free, less than %s", d.Dir, mib(free), mib(d.MinFree))
		}
	}
	return "", ""
}

// Disk is a directory whose file system needs MinFree bytes free.
type Disk struct {
	Dir     string
	MinFree uint64
}

// Disks are the file systems readiness watches: the Nix store's, and
// filesystem storage's (storageDir, or "" for a bucket). Each counts as
// full below 1 GiB; the Nix store's below NIXERY_NIX_MIN_FREE (nixMinFree)
// if that is smaller: Nix collects garbage itself as it builds to keep
// that much free, so the operator has said that Nix may run so low.
func Disks(nixMinFree int64, storageDir string) []Disk {
	store := Disk{nixStore, defaultMinFree}
	if nixMinFree > 0 && uint64(nixMinFree) < store.MinFree {
		store.MinFree = uint64(nixMinFree)
	}
	out := []Disk{store}
	if storageDir != "" {
		out = append(out, Disk{storageDir, defaultMinFree})
	}
	return out
}

// freeBytes is the space available to unprivileged writers on the file
// system holding path (statfs(2): available blocks × block size).
//
// A directory that does not exist yet (the Nix store of an empty /nix
// volume before the first build) is judged by the nearest one above it
// that does: that is where it will be made.
func freeBytes(path string) (uint64, error) {
	for {
		var st syscall.Statfs_t
		err := syscall.Statfs(path, &st)
		if err == nil {
			return st.Bavail * uint64(st.Bsize), nil
		}
		parent := filepath.Dir(path)
		if !errors.Is(err, syscall.ENOENT) || parent == path {
			return 0, err
		}
		path = parent
	}
}

func mib(n uint64) string { return fmt.Sprintf("%d MiB", n>>20) }

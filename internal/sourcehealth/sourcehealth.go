// Package sourcehealth watches the package source in the background, so
// that nothing a visitor sees waits on it, and so that a package set this
// Nix cannot evaluate is a fault the operator sees rather than a stream
// of failed builds.
//
// A Watcher resolves the tag latest every Interval (sources reuse their
// resolutions for the cache time, so most rounds ask no remote), and
// evaluates the package set it selects once (nix.Runner.Check: loaded as
// builds load it, which runs nixpkgs' guard against an old Nix): at
// start-up, whenever latest resolves to a new identity (a moving source
// got a new revision), every Interval while the check fails, and after
// Recheck for a package set that may change under the same identity (a
// directory, a channel name).
//
// While the package set latest selects cannot be evaluated:
//
//   - the log says so at ERROR, with Nix's reason, when it starts failing
//     (or the reason changes), and at INFO when it evaluates again;
//   - Status says so, for the index page;
//   - the gauge nixery_source_evaluation_failed is 1;
//   - Usable refuses new builds of that package set with a *FaultError
//     (the registry answers 503 UNAVAILABLE with Retry-After) without
//     running Nix; images already built are served from the caches,
//     which the builder reads before it asks Usable.
//
// A check that Nix did not finish (its timeout, the server stopping) is
// no verdict: the state stays as it was and the next round checks again.
// A resolution that fails (a repository that does not answer) changes
// nothing of the check's state either; Status shows the last revision
// known and why it is not newer.
package sourcehealth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nixery/nixery/internal/every"
	"github.com/nixery/nixery/internal/fault"
	"github.com/nixery/nixery/internal/nix"
	"github.com/nixery/nixery/internal/redact"
	"github.com/nixery/nixery/internal/source"
)

// DefaultInterval is how often latest is resolved, and a package set that
// cannot be evaluated checked again, when Interval is 0.
const DefaultInterval = time.Minute

// Watcher watches one package source. Source and Nix are required; the
// other fields have working zero values. Its methods are safe for
// concurrent use; Run is called once.
type Watcher struct {
	Source source.Source
	Nix    *nix.Runner
	// NixVersion is what nix.Version said ("nix-build (Nix) 2.8.0"),
	// named in the reasons: a guard against old Nix is fixed by another
	// Nix or another package set, and the operator needs to know which
	// Nix this is.
	NixVersion string
	// Interval between rounds; 0 means DefaultInterval.
	Interval time.Duration
	// Recheck is how long the check of a package set that may change
	// under its identity (not source.Resolved.Immutable) holds while it
	// evaluates; 0 means Interval. Serve sets the cache time: images of
	// such a set are rebuilt after it anyway.
	Recheck time.Duration
	Logger  *slog.Logger

	// For tests: the clock (time.Now if nil) and the check (Nix's if
	// nil).
	now   func() time.Time
	check func(ctx context.Context, src source.Resolved) error

	mu sync.Mutex
	st state
	// checks counts the checks by result: ok, failed (Nix's verdict),
	// error (no verdict).
	checks map[string]int64
}

// state is what the rounds so far found.
type state struct {
	resolved   bool            // latest resolved at least once
	latest     source.Resolved // its last resolution
	resolveErr error           // of the last round's resolution; nil if it worked
	first      chan struct{}   // closed when latest is first resolved

	checked   string    // the identity last checked with a verdict
	checkedAt time.Time // of that verdict
	fault     *FaultError
}

// FaultError refuses a new build of a package set that this Nix cannot
// evaluate: the build would fail as the check did. It is retryable (an
// operator may fix the source or Nix under the running server): the
// registry answers 503 UNAVAILABLE with Retry-After.
type FaultError struct {
	Source     string // the source, for humans (redacted)
	Nix        string // "Nix 2.8.0"
	Reason     string // Nix's reason, one line
	RetryAfter time.Duration
}

func (e *FaultError) Error() string {
	return redact.URLs(fmt.Sprintf("the package source (%s) cannot be evaluated by %s: %s", e.Source, e.Nix, e.Reason))
}

// Fault: the package set cannot be evaluated by this Nix, a fault of the
// server, not of the request, that the operator can fix while it runs
// (the check repeats): so unavailable, not internal. Clients and
// monitors read 503 with Retry-After as "try again later", and clients
// that retry (go-containerregistry, containerd) wait as told instead of
// hammering. RetryAfter in whole seconds, as the check's interval is.
func (e *FaultError) Fault() fault.Fault {
	return fault.Fault{Kind: fault.Unavailable, RetryAfter: e.RetryAfter.Truncate(time.Second)}
}

// Status is what the index page shows of the source.
type Status struct {
	// Revision is the revision latest resolved to last, "" if none yet
	// or the source has none (a directory).
	Revision string
	// Resolving: latest has not been resolved yet, nor failed to.
	Resolving bool
	// ResolveError says why the last resolution of latest failed
	// (redacted); Revision is then the one before, if any.
	ResolveError string
	// Fault says why the package set latest selects cannot be evaluated,
	// "" if it can or has not been checked yet.
	Fault string
}

func (w *Watcher) interval() time.Duration {
	if w.Interval > 0 {
		return w.Interval
	}
	return DefaultInterval
}

func (w *Watcher) recheck() time.Duration {
	if w.Recheck > 0 {
		return max(w.Recheck, w.interval())
	}
	return w.interval()
}

func (w *Watcher) clock() time.Time {
	if w.now != nil {
		return w.now()
	}
	return time.Now()
}

func (w *Watcher) logger() *slog.Logger {
	if w.Logger != nil {
		return w.Logger
	}
	return slog.Default()
}

// Run resolves and checks at once, then every Interval, until ctx ends.
func (w *Watcher) Run(ctx context.Context) {
	every.Run(ctx, 0, w.interval, w.round)
}

// round resolves latest and checks its package set if that is due.
func (w *Watcher) round(ctx context.Context) {
	res, err := w.Source.Resolve(ctx, "latest")
	if ctx.Err() != nil {
		return // stopping is no news about the source
	}
	if !w.resolved(res, err) {
		return
	}
	err = w.evaluate(ctx, res)
	if ctx.Err() != nil {
		return
	}
	w.record(res.Identity, err)
}

// resolved records a resolution and says whether a check is due.
func (w *Watcher) resolved(res source.Resolved, err error) (due bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		if w.st.resolveErr == nil || w.st.resolveErr.Error() != err.Error() {
			w.logger().Warn("package source: latest cannot be resolved; the last revision known stays", "source", w.Source.String(),
				"last_revision", w.st.latest.Revision, "err", redact.URLs(err.Error()))
		}
		w.st.resolveErr = err
		return false
	}
	if w.st.resolveErr != nil {
		w.logger().Info("package source: latest resolves again", "source", w.Source.String(), "revision", res.Revision)
	}
	if !w.st.resolved {
		close(w.firstLocked())
	}
	w.st.resolved, w.st.resolveErr, w.st.latest = true, nil, res
	switch {
	case res.Identity != w.st.checked:
		return true // new, or never checked with a verdict
	case w.st.fault != nil:
		return true // failing: every round, so that a fix is noticed
	case !res.Immutable:
		return w.clock().Sub(w.st.checkedAt) >= w.recheck()
	}
	return false
}

func (w *Watcher) evaluate(ctx context.Context, res source.Resolved) error {
	if w.check != nil {
		return w.check(ctx, res)
	}
	return w.Nix.Check(ctx, nix.CheckRequest{SrcType: res.Type, SrcArgs: res.Args})
}

// record keeps the outcome of a check of identity and logs each change.
func (w *Watcher) record(identity string, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.checks == nil {
		w.checks = map[string]int64{}
	}
	log := w.logger().With("source", w.Source.String())
	if rev := w.st.latest.Revision; rev != "" {
		log = log.With("revision", rev)
	}
	var ee *nix.EvaluationError
	switch {
	case err == nil:
		w.checks["ok"]++
		if w.st.fault != nil {
			log.Info("package source: Nix evaluates it again; new images are built again")
		}
		w.st.fault = nil
	case errors.As(err, &ee):
		w.checks["failed"]++
		f := &FaultError{Source: w.Source.String(), Nix: nix.Describe(w.NixVersion), Reason: ee.Reason, RetryAfter: w.interval()}
		if w.st.fault == nil || w.st.fault.Error() != f.Error() {
			log.Error("package source cannot be evaluated by this Nix: new images fail at once until it can; images already built are served",
				"nix", f.Nix, "reason", f.Reason, "next_check", w.interval())
		}
		w.st.fault = f
	default:
		// No verdict: checked again next round, the state as it was.
		w.checks["error"]++
		log.Warn("package source: the check did not finish; trying again next round", "err", redact.URLs(err.Error()), "next_check", w.interval())
		return
	}
	w.st.checked, w.st.checkedAt = identity, w.clock()
}

// firstLocked is the channel closed when latest is first resolved; w.mu
// is held.
func (w *Watcher) firstLocked() chan struct{} {
	if w.st.first == nil {
		w.st.first = make(chan struct{})
	}
	return w.st.first
}

// Resolved returns a channel closed once latest has been resolved (for
// work that needs the package set, such as the search's package list,
// and can wait for it in the background).
func (w *Watcher) Resolved() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.firstLocked()
}

// Latest is the package set the tag latest selected at the last round
// that resolved it, and false if none has yet. It reads memory only, so
// that nothing a visitor sees waits for the source.
func (w *Watcher) Latest() (source.Resolved, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.st.latest, w.st.resolved
}

// Usable refuses a new build of src with a *FaultError when src is the
// package set the last check found Nix cannot evaluate; any other
// package set (another tag's, or one not checked yet) is left to Nix.
// It reads memory only.
func (w *Watcher) Usable(src source.Resolved) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.st.fault != nil && w.st.checked == src.Identity {
		return w.st.fault
	}
	return nil
}

// Status is the state of the source as the last rounds found it. It
// reads memory only.
func (w *Watcher) Status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := Status{Revision: w.st.latest.Revision, Resolving: !w.st.resolved && w.st.resolveErr == nil}
	if w.st.resolveErr != nil {
		s.ResolveError = redact.URLs(w.st.resolveErr.Error())
	}
	if f := w.latestFaultLocked(); f != nil {
		s.Fault = f.Error()
	}
	return s
}

// latestFaultLocked is the fault of the package set latest selects now,
// nil if it can be evaluated or has not been checked; w.mu is held.
func (w *Watcher) latestFaultLocked() *FaultError {
	if w.st.fault != nil && w.st.checked == w.st.latest.Identity {
		return w.st.fault
	}
	return nil
}

var (
	descFailed = prometheus.NewDesc("nixery_source_evaluation_failed",
		"1 while the package set the tag latest selects cannot be evaluated by this Nix (new images fail at once; see the log), else 0.", nil, nil)
	descResolveFailed = prometheus.NewDesc("nixery_source_resolution_failed",
		"1 while the tag latest of the package source cannot be resolved (its repository does not answer), else 0.", nil, nil)
	descChecks = prometheus.NewDesc("nixery_source_checks_total",
		"Evaluations of the package source by result: ok, failed (Nix cannot evaluate it), error (the check did not finish).", []string{"result"}, nil)
)

// Collector exports the state to Prometheus; a scrape reads memory only.
func (w *Watcher) Collector() prometheus.Collector { return (*collector)(w) }

type collector Watcher

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descFailed
	ch <- descResolveFailed
	ch <- descChecks
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	w := (*Watcher)(c)
	w.mu.Lock()
	failed, resolveFailed := 0.0, 0.0
	if w.latestFaultLocked() != nil {
		failed = 1
	}
	if w.st.resolveErr != nil {
		resolveFailed = 1
	}
	checks := map[string]int64{"ok": w.checks["ok"], "failed": w.checks["failed"], "error": w.checks["error"]}
	w.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descFailed, prometheus.GaugeValue, failed)
	ch <- prometheus.MustNewConstMetric(descResolveFailed, prometheus.GaugeValue, resolveFailed)
	for result, n := range checks {
		ch <- prometheus.MustNewConstMetric(descChecks, prometheus.CounterValue, float64(n), result)
	}
}

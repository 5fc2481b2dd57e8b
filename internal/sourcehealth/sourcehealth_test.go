package sourcehealth

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nixery/nixery/internal/nix"
	"github.com/nixery/nixery/internal/source"
)

// fakeSource resolves latest to what the test says.
type fakeSource struct {
	res source.Resolved
	err error
}

func (s *fakeSource) Resolve(context.Context, string) (source.Resolved, error) { return s.res, s.err }
func (s *fakeSource) String() string                                           { return "git repository https://user:xxxxx@example.org/pkgs.git" }

// harness is a Watcher over a fake source, a fake check and a clock
// that moves only when told.
type harness struct {
	w       *Watcher
	src     *fakeSource
	log     *bytes.Buffer
	now     time.Time
	checks  []string // identities checked, in order
	verdict error    // what the next checks say
}

func newHarness(t *testing.T) *harness {
	h := &harness{src: &fakeSource{}, log: new(bytes.Buffer), now: time.Unix(1_000_000, 0)}
	h.w = &Watcher{
		Source: h.src, NixVersion: "nix-build (Nix) 2.8.0", Interval: time.Minute, Recheck: 5 * time.Minute,
		Logger: slog.New(slog.NewTextHandler(h.log, nil)),
		now:    func() time.Time { return h.now },
		check: func(_ context.Context, src source.Resolved) error {
			h.checks = append(h.checks, src.Identity)
			return h.verdict
		},
	}
	return h
}

func (h *harness) at(rev string, immutable bool) source.Resolved {
	h.src.res, h.src.err = source.Resolved{Type: "git", Identity: "git:example.org/pkgs.git@" + rev, Revision: rev, Immutable: immutable}, nil
	return h.src.res
}

func (h *harness) round() { h.w.round(context.Background()) }

// metric reads a gauge, or the counter of result, from the collector.
func metric(t *testing.T, w *Watcher, name, result string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(w.Collector())
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if result == "" {
				return m.GetGauge().GetValue()
			}
			if m.GetLabel()[0].GetValue() == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no %s %s", name, result)
	return 0
}

func guard() error {
	return &nix.EvaluationError{Reason: "This version of Nixpkgs requires Nix >= 2.18.0, please upgrade", Err: errors.New("exit status 1")}
}

// The life of a package set that the running Nix cannot evaluate: found
// at the first round, refused at once while it fails (and only that
// package set), checked again every round, and usable again once fixed.
func TestFaultAndRecovery(t *testing.T) {
	h := newHarness(t)
	if s := h.w.Status(); !s.Resolving || s.Fault != "" {
		t.Errorf("before the first round: %+v, want resolving and no fault", s)
	}
	a := h.at("aaaa", true)
	h.verdict = guard()
	h.round()

	err := h.w.Usable(a)
	var fe *FaultError
	if !errors.As(err, &fe) {
		t.Fatalf("Usable: %v, want a FaultError", err)
	}
	want := "the package source (git repository https://user:xxxxx@example.org/pkgs.git) cannot be evaluated by Nix 2.8.0: This version of Nixpkgs requires Nix >= 2.18.0, please upgrade"
	if err.Error() != want || fe.RetryAfter != time.Minute {
		t.Errorf("Usable: %q, retry after %s; want %q, 1m", err, fe.RetryAfter, want)
	}
	other := a
	other.Identity = "git:example.org/pkgs.git@bbbb"
	if err := h.w.Usable(other); err != nil {
		t.Errorf("another package set refused: %v", err)
	}
	if s := h.w.Status(); s.Fault != want || s.Revision != "aaaa" || s.Resolving {
		t.Errorf("status %+v", s)
	}
	if g := metric(t, h.w, "nixery_source_evaluation_failed", ""); g != 1 {
		t.Errorf("gauge %v, want 1", g)
	}
	if n := strings.Count(h.log.String(), "level=ERROR"); n != 1 || !strings.Contains(h.log.String(), "Nix >= 2.18.0") {
		t.Errorf("log: want one ERROR line with the reason:\n%s", h.log)
	}

	// Still failing: checked every round (an immutable set too), logged
	// once.
	h.now = h.now.Add(time.Minute)
	h.round()
	if len(h.checks) != 2 || strings.Count(h.log.String(), "level=ERROR") != 1 {
		t.Errorf("checks %v, log:\n%s", h.checks, h.log)
	}

	// Fixed under the running server.
	h.verdict = nil
	h.round()
	if err := h.w.Usable(a); err != nil {
		t.Errorf("after the fix: %v", err)
	}
	if s := h.w.Status(); s.Fault != "" {
		t.Errorf("after the fix: %+v", s)
	}
	if g := metric(t, h.w, "nixery_source_evaluation_failed", ""); g != 0 {
		t.Errorf("gauge after the fix %v, want 0", g)
	}
	if !strings.Contains(h.log.String(), "evaluates it again") {
		t.Errorf("recovery not logged:\n%s", h.log)
	}
	if f, ok := metric(t, h.w, "nixery_source_checks_total", "failed"), metric(t, h.w, "nixery_source_checks_total", "ok"); f != 2 || ok != 1 {
		t.Errorf("%v failed and %v good checks counted, want 2 and 1", f, ok)
	}
}

// Checks are due for a new identity, for a failing one, and for a moving
// package set after Recheck; a healthy pinned one is checked once.
func TestWhenChecksAreDue(t *testing.T) {
	h := newHarness(t)
	h.at("aaaa", true)
	h.round()
	h.now = h.now.Add(time.Hour)
	h.round()
	if len(h.checks) != 1 {
		t.Errorf("a healthy pinned set checked %d times, want once", len(h.checks))
	}
	h.at("bbbb", true)
	h.round()
	if len(h.checks) != 2 || h.checks[1] != "git:example.org/pkgs.git@bbbb" {
		t.Errorf("a new revision: checks %v", h.checks)
	}

	// A directory: the same identity, contents that may change.
	h.src.res = source.Resolved{Type: "path", Identity: "path:/srv/pkgs"}
	h.round()
	h.now = h.now.Add(4 * time.Minute)
	h.round()
	if len(h.checks) != 3 {
		t.Errorf("a moving set checked again before Recheck: %v", h.checks)
	}
	h.now = h.now.Add(time.Minute)
	h.round()
	if len(h.checks) != 4 {
		t.Errorf("a moving set not checked again after Recheck: %v", h.checks)
	}
}

// A check that did not finish is no verdict: the state stays, the next
// round checks again.
func TestUnfinishedCheckIsNoVerdict(t *testing.T) {
	h := newHarness(t)
	a := h.at("aaaa", true)
	h.verdict = guard()
	h.round()
	h.verdict = nix.ErrTimeout
	h.round()
	if err := h.w.Usable(a); err == nil {
		t.Error("a timed-out check cleared the fault")
	}
	h.verdict = nil
	h.round()
	if err := h.w.Usable(a); err != nil {
		t.Errorf("after a good check: %v", err)
	}

	b := h.at("bbbb", true)
	h.verdict = nix.ErrTimeout
	h.round()
	if err := h.w.Usable(b); err != nil {
		t.Errorf("a timed-out check refused builds: %v", err)
	}
	h.verdict = nil
	h.round()
	if len(h.checks) != 5 {
		t.Errorf("checks %v, want the unfinished one repeated", h.checks)
	}
	if !strings.Contains(h.log.String(), "did not finish") {
		t.Errorf("log:\n%s", h.log)
	}
}

// A source that cannot be resolved keeps the last revision known, shows
// why (without credentials), and changes nothing of the check.
func TestResolutionFailureKeepsLastRevision(t *testing.T) {
	h := newHarness(t)
	h.src.err = errors.New("resolving \"latest\" in git repository https://user:secret@example.org/pkgs.git: git ls-remote ran for 30s without an answer")
	h.round()
	s := h.w.Status()
	if s.Resolving || s.Revision != "" || !strings.Contains(s.ResolveError, "without an answer") || strings.Contains(s.ResolveError, "secret") {
		t.Errorf("status %+v", s)
	}
	if g := metric(t, h.w, "nixery_source_resolution_failed", ""); g != 1 {
		t.Errorf("resolution gauge %v, want 1", g)
	}
	if _, ok := h.w.Latest(); ok {
		t.Error("Latest before any resolution")
	}
	select {
	case <-h.w.Resolved():
		t.Error("Resolved closed before any resolution")
	default:
	}
	a := h.at("aaaa", true)
	h.round()
	<-h.w.Resolved()
	h.src.err = errors.New("timed out")
	h.round()
	if s := h.w.Status(); s.Revision != "aaaa" || s.ResolveError != "timed out" {
		t.Errorf("status %+v, want the last revision and the error", s)
	}
	if got, ok := h.w.Latest(); !ok || got != a {
		t.Errorf("Latest %+v %v, want the last resolution", got, ok)
	}
	if len(h.checks) != 1 || strings.Contains(h.log.String(), "secret") {
		t.Errorf("checks %v; log:\n%s", h.checks, h.log)
	}
}

package nix

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/nixery/nixery/internal/redact"
)

// checkExpr loads a package set as every build does and forces it to an
// attribute set. That is enough to run what a package set checks as it
// loads: nixpkgs' default.nix aborts on a Nix older than lib/minver.nix
// ("This version of Nixpkgs requires Nix >= 2.18.0"), before anything
// else. Nothing is built or listed.
const checkExpr = `{ load, srcType, srcArgs, system }:
let pkgs = load { inherit srcType srcArgs system; };
in if builtins.isAttrs pkgs then true
else throw "nixery: the package set is a ${builtins.typeOf pkgs}, not an attribute set"`

// CheckRequest says which package set to check; the fields mean what
// they mean in Request.
type CheckRequest struct {
	SrcType, SrcArgs string
	System           string
}

// EvaluationError is Nix's verdict that a package set cannot be
// evaluated: it failed to load (a version guard, a syntax error, a
// source that cannot be fetched). Reason is Nix's own message, one line.
type EvaluationError struct {
	Reason string
	Err    error // the *BuildError, with Nix's last lines
}

func (e *EvaluationError) Error() string { return e.Reason }
func (e *EvaluationError) Unwrap() error { return e.Err }

// Check evaluates the package set once, loaded as builds load it (the
// same options and load.nix), and forced to an attribute set. When Nix
// says the set cannot be evaluated, the error is an *EvaluationError;
// any other error (the Runner's timeout, ctx ended, Nix not runnable)
// says nothing about the package set.
func (r *Runner) Check(ctx context.Context, req CheckRequest) error {
	ctx, cancel := r.bounded(ctx)
	defer cancel()
	err := r.run(ctx, io.Discard, nil, "nix-instantiate",
		append([]string{"--eval", "--expr", checkExpr}, r.nixArgs(req.SrcType, req.SrcArgs, req.System)...)...)
	var be *BuildError
	if errors.As(err, &be) && ctx.Err() == nil && !errors.Is(err, ErrTimeout) {
		return &EvaluationError{Reason: evaluationReason(be), Err: be}
	}
	return err
}

// maxReasonBytes bounds a reason: it is shown on pages, in errors and in
// logs, and the whole tail is in the log line of the failed process.
const maxReasonBytes = 512

// abortPrefix is how Nix (2.8 and later) words an abort; the message
// after it is the package set's own.
const abortPrefix = "evaluation aborted with the following error message: '"

// evaluationReason is the first line of the innermost error Nix reported:
// the last line that starts with "error:" and says more than that (Nix
// 2.13 and later put the trace between a bare "error:" and the message),
// without Nix's wording of an abort around the package set's message.
// nixpkgs' guard continues over several lines of upgrade advice; its
// first line says what is wrong.
func evaluationReason(e *BuildError) string {
	reason, last := "", ""
	for _, l := range e.Tail {
		l = strings.TrimSpace(l)
		if rest, ok := strings.CutPrefix(l, "error:"); ok && strings.TrimSpace(rest) != "" {
			reason = strings.TrimSpace(rest)
		}
		if l != "" {
			last = l
		}
	}
	if reason == "" {
		// No message of Nix's: how the process failed, and its last word.
		reason = e.Err.Error()
		if last != "" {
			reason += ": " + last
		}
		return cutReason(reason)
	}
	if rest, ok := strings.CutPrefix(reason, abortPrefix); ok {
		reason = strings.TrimSuffix(strings.TrimSuffix(rest, "'"), ":")
	}
	return cutReason(reason)
}

// cutReason cuts s to maxReasonBytes at a character boundary; a URL the
// cut goes through is masked (its password's "@" may be in the part cut
// off).
func cutReason(s string) string {
	if len(s) <= maxReasonBytes {
		return redact.URLs(s)
	}
	n := maxReasonBytes
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return redact.Cut(s[:n]) + fmt.Sprintf(" … [%d bytes]", len(s))
}

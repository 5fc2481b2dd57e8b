// Package nix is the only code in Nixery that runs Nix.
//
// A build asks Nix for exactly two things and computes the rest in Go:
//
//  1. nix-build, with the embedded expression build.nix, loads the package
//     set (a local path, a nixpkgs channel, a git repository or a flake),
//     resolves the requested attribute paths and language environments
//     and realises their outputs;
//  2. nix path-info reports the runtime closure of those outputs with the
//     size and references of every store path, which is all that layering
//     needs.
//
// Builds of new packages may share the first step: Resolve evaluates the
// package set once for the names of many images (nix-instantiate, which
// writes and roots their derivations but builds nothing), and each build
// then realises its own derivations with Realise, which also realises
// packages resolved before without any evaluation.
//
// A flake source asks one thing more, before any build: nix flake
// metadata locks the flake (FlakeMetadata), and builds then load exactly
// what was locked. Flakes are experimental in every Nix so far, so Nixery
// enables them for its own processes of a flake source only.
//
// Every Nix process runs in a process group of its own, under the caller's
// context and the Runner's timeout. A process that runs out of time is
// stopped as a group: SIGTERM first, so that Nix stops its builders (which
// live in sessions of their own, out of the group's reach), then SIGKILL
// for whatever is left, so that a timed-out build leaves nothing behind.
//
// For a fleet, a Runner may share Nix's work through a binary cache
// (Cache: substitute from it, push every realised closure to it, in the
// background) and pass the operator's Nix settings to every Nix process
// (Options, such as builders for Nix's remote builders).
package nix

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nixery/nixery/internal/fault"
	"github.com/nixery/nixery/internal/redact"
)

// buildExpr resolves attribute paths and returns the derivations to
// realise; see the comment at its top for its arguments.
//
//go:embed build.nix
var buildExpr string

// loadExpr loads a package set; build.nix and search.nix get it as their
// argument `load`.
//
//go:embed load.nix
var loadExpr string

// nixArgs are the options and the package-set arguments of every Nix
// evaluation of a package set, which may build (nix-build) or fetch
// (the package set itself) into the store. The operator's options come
// after Nixery's own, so that they win; the cache's come last, so that
// they extend the substituters whoever set them.
func (r *Runner) nixArgs(srcType, srcArgs, system string) []string {
	args := append(r.offline(), r.storeBounds()...)
	if srcType == "flake" {
		args = append(args, flakeFeatures...)
	}
	args = append(args, r.optionArgs()...)
	args = append(args, r.Cache.substituteArgs()...)
	if system == "" {
		system = hostSystem()
	}
	return append(args, "--arg", "load", loadExpr,
		"--argstr", "srcType", srcType, "--argstr", "srcArgs", srcArgs, "--argstr", "system", system)
}

// storeBounds are the options that keep the store's disk from filling up.
func (r *Runner) storeBounds() []string {
	var args []string
	if r.MinFree > 0 {
		args = append(args, "--option", "min-free", strconv.FormatInt(r.MinFree, 10))
	}
	if r.MaxFree > 0 {
		args = append(args, "--option", "max-free", strconv.FormatInt(r.MaxFree, 10))
	}
	return args
}

// offline are the options that keep Nix from asking binary caches.
func (r *Runner) offline() []string {
	if r.Offline {
		return []string{"--option", "substituters", ""}
	}
	return nil
}

// Runner runs Nix. Its zero value works: no time limit, default logger.
type Runner struct {
	// Timeout limits one whole Build call; 0 means no limit. When it
	// expires, the running Nix process group is stopped (SIGTERM, then
	// SIGKILL after stopGrace) and Build returns an error wrapping
	// ErrTimeout.
	Timeout time.Duration

	// Logger receives one record per Nix process; nil means slog.Default().
	Logger *slog.Logger

	// Log, if set, is called with every line Nix writes to stderr, as it
	// is written (build progress, builder output, errors).
	Log func(line string)

	// Offline stops Nix from asking binary caches for store paths
	// (substituters = ""), but for Cache. For package sets no public
	// cache has, such as the demo set, or machines without network: it
	// saves Nix's retries.
	Offline bool

	// Cache, if its URL is set, is the binary cache that every Nix
	// process that realises substitutes from, and that the closure of
	// every build is pushed to (in the background, see startPush).
	Cache Cache

	// Options are further Nix settings for every Nix process
	// (NIXERY_NIX_OPTIONS, see ParseOptions), after Nixery's own.
	Options []Option

	// MinFree and MaxFree, if not 0, are Nix's min-free and max-free
	// options (bytes) for every Nix process that builds or fetches:
	// when the store's disk has less than MinFree free, Nix collects
	// garbage until MaxFree is free, during the build. What a build holds
	// as garbage-collector roots (Request.RootDir) stays. 0 leaves Nix's
	// own configuration. With a Nix daemon, they count only for a
	// trusted user (nix.conf: trusted-users).
	MinFree, MaxFree int64

	// started, if set, is called with every Nix process started (its
	// process id is its process group id); for tests.
	started func(cmd *exec.Cmd)

	push    pushes       // pushes to Cache
	version versionProbe // the version of nix, asked once
}

// Request says what to build.
type Request struct {
	// SrcType and SrcArgs say where the package set comes from, as
	// resolved by source.Source.Resolve (Resolved.Type and Args): "path"
	// and an absolute directory, "nixpkgs" and a channel, branch or commit,
	// "git" and a JSON object {"url":…,"ref":…} or {"url":…,"rev":…}, or
	// "flake" and a locked flake reference (FlakeMetadata's URL).
	SrcType, SrcArgs string

	// Packages are attribute paths such as "hello" or "xorg.xev". Each
	// step matches an attribute exactly or, failing that, the only
	// attribute equal to it ignoring case. A language environment
	// "<attr>.withpackages.<p1>.<p2>…" is <attr>.withPackages called
	// with p1, p2, … of <attr>.pkgs (else of the package set); each of
	// them that does not resolve is reported by its own name.
	Packages []string

	// System is "x86_64-linux" or "aarch64-linux"; empty means the
	// system this program runs on.
	System string

	// Log, if set, is called with every line Nix writes to stderr for
	// this build (besides Runner.Log), e.g. for live build progress.
	Log func(line string)

	// RootDir, if set, is a directory where nix-build leaves its result
	// links, which Nix registers as garbage-collector roots: the outputs
	// and their closure then survive a `nix-collect-garbage` until the
	// caller removes the directory (after packing the layers). Without
	// it, nothing protects the paths between realisation and packing.
	RootDir string

	// Phase, if set, is called as each phase starts: "realise"
	// (evaluate and build with nix-build), then "graph" (query the
	// closure with its sizes and references).
	Phase func(name string)

	// Evaluated, if set, is called once the evaluation is over and Nix
	// builds (or fetches), or at the latest when Build returns: other
	// evaluations of the package set may start then (see Resolve).
	Evaluated func()
}

// StorePath is one store path of a closure.
type StorePath struct {
	Path       string   // /nix/store/…
	NarSize    int64    // size of its NAR serialisation, in bytes
	NarHash    string   // SHA-256 of its NAR serialisation, "sha256:<hex>"; "" if Nix said none
	References []string // other store paths it refers to, sorted, without itself
}

// Result is what a build produced.
type Result struct {
	// Roots are the realised output paths of the requested packages,
	// without duplicates, in request order.
	Roots []string

	// Closure is the runtime closure of all Roots, sorted by Path.
	Closure []StorePath

	// Programs are the main programs (meta.mainProgram) of the
	// requested packages that name one, as absolute paths the way
	// nixpkgs' lib.getExe spells them: bin/<mainProgram> of the
	// package's "bin" output, else of "out". In request order; not
	// checked against the roots (archive.Setup does that).
	Programs []string

	// Packages say what each requested name resolved to, in request
	// order (from an evaluation; a Realise of known paths has none).
	Packages []Resolution

	// Realise is the time nix-build took (evaluation and realisation);
	// Graph the time of the closure query.
	Realise, Graph time.Duration
}

// Resolution is what one requested name resolved to: the output paths that
// go into an image and its main programs (see Result.Programs).
type Resolution struct {
	Name     string   `json:"name"`
	Outputs  []string `json:"outputs"`
	Programs []string `json:"programs"`
	// Realise, from Resolve only, is what `nix-store --realise` builds
	// Outputs from: "<derivation>!<output>,<output>…".
	Realise string `json:"realise,omitempty"`
	// Meta is what the package's meta and derivation say of it, for its
	// SBOM (build.nix's nixery-meta line); empty where Nix said nothing.
	Meta Meta `json:"meta,omitzero"`
}

// Meta is what a package's meta and derivation say of it: the
// attributes an SBOM names. Any of them may be empty: a package set
// need not set them, and an attribute that throws is left out.
type Meta struct {
	PName    string    `json:"pname,omitempty"`
	Version  string    `json:"version,omitempty"`
	Licenses []License `json:"license,omitempty"`  // meta.license, one or a list: every one applies
	Homepage string    `json:"homepage,omitempty"` // meta.homepage, the first if a list
	DrvPath  string    `json:"drvPath,omitempty"`  // the derivation, /nix/store/…drv
}

// License is one licence of meta.license, as nixpkgs' lib.licenses
// describe them (a package set's string licence is its spdxId and
// shortName).
type License struct {
	SPDXID    string `json:"spdxId,omitempty"`    // "MIT", "GPL-2.0-or-later"; "" for licences SPDX does not list
	ShortName string `json:"shortName,omitempty"` // "mit", "unfree"
	FullName  string `json:"fullName,omitempty"`  // "MIT License"
}

// ResolveRequest asks what many names resolve to, in one evaluation of a
// package set; the fields mean what they mean in Request.
type ResolveRequest struct {
	SrcType, SrcArgs string
	System           string
	Names            []string
	// RootDir, if set, is where nix-instantiate leaves garbage-collector
	// roots for the derivations it writes, so that they survive until
	// the builds that need them have realised them; the caller removes
	// it then.
	RootDir string
}

// Resolve evaluates the package set once and says what each name
// resolves to (Resolution.Realise included), building nothing: the
// evaluation the builds of several images share. A name that does not
// resolve, or whose evaluation throws (a broken or unfree package), is
// missing from the result rather than failing the others: a build of it
// runs Build, which says why (a package set that throws as it loads
// leaves out every name). Resolve fails only when the evaluation as a
// whole does (a source that cannot be fetched or does not parse).
func (r *Runner) Resolve(ctx context.Context, req ResolveRequest) ([]Resolution, error) {
	if len(req.Names) == 0 {
		return nil, nil
	}
	ctx, cancel := r.bounded(ctx)
	defer cancel()
	names, err := json.Marshal(req.Names)
	if err != nil {
		return nil, err
	}
	var args []string
	if req.RootDir != "" {
		// drv, drv-2, …: garbage-collector roots, as nix-build's result links.
		args = append(args, "--add-root", filepath.Join(req.RootDir, "drv"), "--indirect")
	}
	args = append(args, "--expr", buildExpr, "--argstr", "packages", string(names), "--argstr", "batch", "1")
	stderr := &lineWriter{log: r.Log, batch: true, sourceRev: sourceRev(req.SrcType, req.SrcArgs)}
	if err := r.runWith(ctx, io.Discard, stderr, "nix-instantiate", append(args, r.nixArgs(req.SrcType, req.SrcArgs, req.System)...)...); err != nil {
		return nil, err
	}
	// Only names asked for count, each once.
	var out []Resolution
	for _, res := range stderr.resolved {
		if slices.Contains(req.Names, res.Name) && !slices.ContainsFunc(out, func(o Resolution) bool { return o.Name == res.Name }) {
			res.Meta = stderr.metas[res.Name]
			out = append(out, res)
		}
	}
	return out, nil
}

// KnownRequest asks for packages whose output paths are known already
// (an earlier evaluation of the same package set resolved them): they are
// realised (present, substituted, or built from their derivations if
// Nix still has them) without evaluating the package set.
type KnownRequest struct {
	Paths []string // output paths, in request order
	// Realise, if set, is what to realise instead of Paths: the
	// Resolution.Realise of each package (its derivation and outputs),
	// for outputs that may not be built yet.
	Realise []string
	RootDir string // as in Request
	Log     func(line string)
	Phase   func(name string)
}

// Realise realises known output paths and reports their closure, like
// Build without the evaluation. A path Nix cannot produce (collected, and
// not in any substituter) fails with a *BuildError; the caller then
// evaluates afresh with Build.
func (r *Runner) Realise(ctx context.Context, req KnownRequest) (*Result, error) {
	if len(req.Paths) == 0 {
		return &Result{}, nil
	}
	ctx, cancel := r.bounded(ctx)
	defer cancel()
	for _, p := range append(slices.Clip(req.Paths), req.Realise...) {
		if !strings.HasPrefix(p, "/nix/store/") || strings.ContainsAny(p, " \n") {
			return nil, &BuildError{Err: fmt.Errorf("not a store path: %q", p)}
		}
	}
	start := time.Now()
	if req.Phase != nil {
		req.Phase("realise")
	}
	logLine := r.lineLogger(req.Log)
	args := []string{"--realise"}
	if req.RootDir != "" {
		// result, result-2, …: garbage-collector roots, as nix-build's.
		args = append(args, "--add-root", filepath.Join(req.RootDir, "result"), "--indirect")
	}
	args = append(args, r.offline()...)
	args = append(args, r.storeBounds()...)
	args = append(args, r.optionArgs()...)
	args = append(args, r.Cache.substituteArgs()...)
	var roots, realise []string
	for _, p := range req.Paths {
		if !slices.Contains(roots, p) {
			roots = append(roots, p)
		}
	}
	from := req.Realise
	if from == nil {
		from = roots
	}
	for _, p := range from {
		if !slices.Contains(realise, p) {
			realise = append(realise, p)
		}
	}
	if err := r.run(ctx, io.Discard, logLine, "nix-store", append(args, realise...)...); err != nil {
		return nil, err
	}
	realised := time.Now()
	if req.Phase != nil {
		req.Phase("graph")
	}
	closure, err := r.closure(ctx, roots, logLine)
	if err != nil {
		return nil, err
	}
	return &Result{Roots: roots, Closure: closure, Realise: realised.Sub(start), Graph: time.Since(realised)}, nil
}

// bounded is ctx limited to the Runner's Timeout, if it has one.
func (r *Runner) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	if r.Timeout > 0 {
		return context.WithTimeout(ctx, r.Timeout)
	}
	return ctx, func() {}
}

// lineLogger is the Runner's log with a request's log beside it.
func (r *Runner) lineLogger(extra func(string)) func(string) {
	if extra == nil {
		return r.Log
	}
	return func(l string) {
		if r.Log != nil {
			r.Log(l)
		}
		extra(l)
	}
}

// closure queries the runtime closure of roots with sizes and
// references, in one process.
func (r *Runner) closure(ctx context.Context, roots []string, logLine func(string)) ([]StorePath, error) {
	var out bytes.Buffer
	args := append(r.optionArgs(), "--extra-experimental-features", "nix-command", "path-info")
	args = append(args, r.nixVersion(ctx).pathInfoArgs()...)
	args = append(args, "--recursive")
	args = append(args, r.offline()...)
	args = append(args, roots...)
	if err := r.run(ctx, &out, logLine, "nix", args...); err != nil {
		return nil, err
	}
	closure, err := parsePathInfo(out.Bytes())
	if err != nil {
		return nil, &BuildError{Err: fmt.Errorf("nix path-info: %w", err)}
	}
	return closure, nil
}

// ErrTimeout is wrapped by the error of a build that ran out of time,
// whether the Runner's Timeout or the caller's context deadline expired.
var ErrTimeout = fault.New("nix timed out", fault.Fault{Kind: fault.Internal})

// UnknownPackagesError means that some requested names are not packages
// of the package set. It lists all of them at once.
type UnknownPackagesError struct {
	// Packages are the names that did not resolve, in request order.
	Packages []string

	// Details explains some of them, by name: "ambiguous: FooBar, fooBar"
	// for a name that matches several attributes ignoring case, "not a
	// package" for a name of something else, such as a package set.
	Details map[string]string

	// Suggestions are close names of the package set, by name, as
	// whoever holds its package list found them (see
	// builder.Builder.Suggest): a few at most, as an image name spells
	// them. Nix finds none: nil until then.
	Suggestions map[string][]string
}

func (e *UnknownPackagesError) Error() string {
	names := make([]string, len(e.Packages))
	for i, p := range e.Packages {
		var notes []string
		if d := e.Details[p]; d != "" {
			notes = append(notes, d)
		}
		if s := e.Suggestions[p]; len(s) > 0 {
			notes = append(notes, "did you mean "+orList(s)+"?")
		}
		names[i] = p
		if len(notes) > 0 {
			names[i] += " (" + strings.Join(notes, "; ") + ")"
		}
	}
	return "unknown package(s): " + strings.Join(names, ", ")
}

// WithSuggestions returns a copy of e with the suggestions s, leaving e
// as it is (the requests that met it may share it).
func (e *UnknownPackagesError) WithSuggestions(s map[string][]string) *UnknownPackagesError {
	c := *e
	c.Suggestions = s
	return &c
}

// orList is "a", "a or b", "a, b or c".
func orList(s []string) string {
	if len(s) == 1 {
		return s[0]
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

func (e *UnknownPackagesError) Fault() fault.Fault { return fault.Fault{Kind: fault.NotFound} }

// BuildError is any other failure of Nix: evaluation errors, failed
// builders, unreachable sources.
type BuildError struct {
	Tail []string // the last meaningful lines Nix wrote to stderr
	Err  error    // how the process failed
}

func (e *BuildError) Error() string {
	var b strings.Builder
	b.WriteString("nix failed: ")
	b.WriteString(e.Err.Error())
	for _, l := range e.Tail {
		b.WriteString("\n\t")
		b.WriteString(l)
	}
	return redact.URLs(b.String()) // Tail is redacted already; Err may not be
}

func (e *BuildError) Unwrap() error { return e.Err }

// Fault: a failure of Nix is the server's, even one that a cancellation
// caused (Err).
func (e *BuildError) Fault() fault.Fault { return fault.Fault{Kind: fault.Internal} }

// Build realises the requested packages and reports their closure.
func (r *Runner) Build(ctx context.Context, req Request) (*Result, error) {
	if len(req.Packages) == 0 {
		return &Result{}, nil
	}
	ctx, cancel := r.bounded(ctx)
	defer cancel()
	start := time.Now()
	phase := func(name string) {
		if req.Phase != nil {
			req.Phase(name)
		}
	}
	phase("realise")
	logLine := r.lineLogger(req.Log)
	packages, err := json.Marshal(req.Packages)
	if err != nil {
		return nil, err
	}

	// 1. Resolve and realise. nix-build prints one output path per line,
	// in the order of the list it built.
	var out bytes.Buffer
	outLink := []string{"--no-out-link"}
	if req.RootDir != "" {
		outLink = []string{"--out-link", filepath.Join(req.RootDir, "result")}
	}
	args := append(outLink, "--expr", buildExpr, "--argstr", "packages", string(packages))
	stderr := &lineWriter{log: logLine, sourceRev: sourceRev(req.SrcType, req.SrcArgs)}
	if req.Evaluated != nil {
		evaluated := sync.OnceFunc(req.Evaluated)
		defer evaluated()
		stderr.evaluated = evaluated
	}
	err = r.runWith(ctx, &out, stderr, "nix-build", append(args, r.nixArgs(req.SrcType, req.SrcArgs, req.System)...)...)
	if err != nil {
		return nil, err
	}
	var roots []string
	for _, l := range strings.Split(out.String(), "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "/") && !slices.Contains(roots, l) {
			roots = append(roots, l)
		}
	}
	if len(roots) == 0 {
		return nil, &BuildError{Err: errors.New("nix-build printed no output paths")}
	}
	if r.Cache.URL != "" {
		r.startPush(ctx, roots)
	}

	realised := time.Now()
	phase("graph")

	// 2. The closure, with sizes and references, in one process.
	closure, err := r.closure(ctx, roots, logLine)
	if err != nil {
		return nil, err
	}
	var programs []string
	for i, p := range stderr.packages {
		programs = append(programs, p.Programs...)
		stderr.packages[i].Meta = stderr.metas[p.Name]
	}
	return &Result{Roots: roots, Closure: closure, Programs: programs, Packages: stderr.packages, Realise: realised.Sub(start), Graph: time.Since(realised)}, nil
}

// hostSystem is the Nix system name of the machine this runs on.
func hostSystem() string {
	if runtime.GOARCH == "arm64" {
		return "aarch64-linux"
	}
	return "x86_64-linux"
}

func (r *Runner) logger() *slog.Logger {
	if r.Logger != nil {
		return r.Logger
	}
	return slog.Default()
}

// unknownMarker starts the line of build.nix's error for unknown names.
const unknownMarker = "nixery-unknown-packages: "

// unknownError recognises build.nix's error for unknown names in a line
// of Nix's stderr, or returns nil.
func unknownError(line string) *UnknownPackagesError {
	i := strings.Index(line, unknownMarker)
	if i < 0 {
		return nil
	}
	var unknown []struct {
		Name       string   `json:"name"`
		Candidates []string `json:"candidates"`
		Reason     string   `json:"reason"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(line[i+len(unknownMarker):])), &unknown); err != nil || len(unknown) == 0 {
		return nil
	}
	e := &UnknownPackagesError{Details: map[string]string{}}
	for _, u := range unknown {
		e.Packages = append(e.Packages, u.Name)
		switch {
		case len(u.Candidates) > 0:
			e.Details[u.Name] = "ambiguous: " + strings.Join(u.Candidates, ", ")
		case u.Reason != "":
			e.Details[u.Name] = u.Reason
		}
	}
	return e
}

// missingRevRE matches what Nix's fetchGit says of a commit the
// repository does not have: "Cannot find Git revision '<rev>' in ref …"
// (Nix 2.8 and later), "getting Git object '<rev>': object not found"
// (Nix 2.20 and later, of a repository on this machine), or git's "not
// our ref <rev>" from a remote.
var missingRevRE = regexp.MustCompile(`Cannot find Git revision '([0-9a-f]{40})'|getting Git object '([0-9a-f]{40})': object not found|not our ref ([0-9a-f]{40})\b`)

// missingRev is the commit that a line says the repository does not
// have, or "".
func missingRev(line string) string {
	for _, rev := range missingRevRE.FindStringSubmatch(line) {
		if len(rev) == 40 {
			return rev
		}
	}
	return ""
}

// UnknownRevisionError means that a tag names no revision of the package
// source: a git repository without such a branch, tag or commit, a tag
// that is neither a nixpkgs channel nor a commit, a tag other than
// "latest" for a local path (Source, Tag and Reason, from the source);
// or the commit a git package set is to be fetched at (a tag of 40 hex
// digits, taken as a commit without asking the remote) does not exist in
// its repository, which Nix found out (Rev).
type UnknownRevisionError struct {
	Source, Tag string
	Reason      string // what the source's tags are; "" for git
	Rev         string // the commit Nix did not find
}

func (e *UnknownRevisionError) Error() string {
	switch {
	case e.Rev != "":
		return fmt.Sprintf("the package set's repository has no commit %s", e.Rev)
	case e.Reason != "":
		return fmt.Sprintf("%s: the tag %q names no package set: %s", redact.URLs(e.Source), e.Tag, e.Reason)
	}
	return fmt.Sprintf("%s has no branch, tag or commit named %q", redact.URLs(e.Source), e.Tag)
}

func (e *UnknownRevisionError) Fault() fault.Fault { return fault.Fault{Kind: fault.NotFound} }

// sourceRev is the commit a git package set is fetched at, or "".
func sourceRev(srcType, srcArgs string) string {
	if srcType != "git" {
		return ""
	}
	var args struct {
		Rev string `json:"rev"`
	}
	if json.Unmarshal([]byte(srcArgs), &args) != nil {
		return ""
	}
	return args.Rev
}

// ansiRE matches terminal escape sequences, which newer Nix may print.
var ansiRE = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]`)

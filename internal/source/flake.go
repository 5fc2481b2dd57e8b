package source

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nixery/nixery/internal/bounded"
	"github.com/nixery/nixery/internal/flight"
	"github.com/nixery/nixery/internal/nix"
	"github.com/nixery/nixery/internal/redact"
)

// FlakeLockTimeout bounds one locking of a flake: waiting for a free
// slot and running `nix flake metadata`, which fetches the flake's source
// (for a github: flake of nixpkgs, a tarball of tens of megabytes).
const FlakeLockTimeout = 10 * time.Minute

// maxFlakeLocks bounds the `nix flake metadata` processes one source runs
// at once; fetching is network- and disk-bound, a few suffice.
const maxFlakeLocks = 2

// maxLocked bounds the remembered lockings (and failures) of one source.
const maxLocked = 4096

// FlakeSource is a flake whose packages are the package set
// (NIXERY_PKGS_FLAKE): its legacyPackages.<system>, then its
// packages.<system> (see package nix).
//
// For a flake in git (git+https://…, git+ssh://…, git+file://…, github:,
// gitlab:, sourcehut:) the image tag selects a branch, tag or commit as
// for NIXERY_PKGS_REPO: "latest" is the ref the reference names, else the
// default branch. The name is resolved to a commit with git ls-remote
// (a GitSource, with its bounds and single flight), then Nix locks the
// flake at that commit (`nix flake metadata`). Any other flake (path:,
// tarballs, flake: registry names) has only the tag "latest" and is
// locked as it is, by the hash of its contents.
//
// The cache identity is the locked revision, else the content hash; a
// flake whose own flake.lock does not lock every input also gets the lock
// graph Nix made into it, and is not immutable. A locking is reused while
// it pins the flake for good (a commit of a fully locked flake), else for
// TTL; one of a missing commit or a broken flake is remembered for
// UnknownRefTTL. Lockings run one per reference at a time however many
// pulls ask, at most maxFlakeLocks at once, each within FlakeLockTimeout,
// and stop when their last waiter leaves.
//
// The reference may carry credentials (git+https://user:token@host/…):
// git and Nix get them; String, Identity and every error show it redacted.
type FlakeSource struct {
	Ref string        // the flake reference, e.g. github:org/pkgs or git+file:///srv/pkgs
	TTL time.Duration // how long a moving locking is reused

	// Nix runs `nix flake metadata`; nil: a Runner of its own.
	Nix *nix.Runner

	// For tests: FlakeLockTimeout if 0; hooks called as a locking starts
	// (with its context and the reference given to Nix) and as a caller
	// starts waiting.
	timeout time.Duration
	locking func(ctx context.Context, ref string)
	waiting func(ref string)

	once    sync.Once
	parsed  flakeRef
	err     error
	git     *GitSource // resolves tags of a flake in git
	mu      sync.Mutex
	locks   *bounded.Map[string, flakeLock]          // by the reference given to Nix
	failed  *bounded.Map[string, error]              // the same, when it failed (for UnknownRefTTL)
	calls   flight.Group[string, *nix.FlakeMetadata] // lockings in flight
	slots   slots                                    // one per running locking
	nowFunc func() time.Time
}

type flakeLock struct {
	md *nix.FlakeMetadata
	at time.Time
}

// flakeRef is a flake reference taken apart as far as Nixery needs it.
type flakeRef struct {
	// kind is "git" (git+…), "github", "gitlab" or "sourcehut", whose
	// tags select git refs, or "" for any other, which has only latest.
	kind string
	// repo is the git repository, for git ls-remote.
	repo string
	// ref and rev are what the reference itself selects ("" if nothing).
	ref, rev string
	// base and query rebuild the reference with another ref or rev.
	base  string
	query url.Values
}

// ParseFlakeRef checks a flake reference as NIXERY_PKGS_FLAKE takes it:
// with its type spelt out (github:, gitlab:, sourcehut:, git+…, path:,
// tarball+…, https:, flake:), because a bare path is a git or a path
// flake depending on what the directory holds. A relative path: is made
// absolute.
func ParseFlakeRef(ref string) (string, error) {
	f, err := parseFlakeRef(ref)
	if err != nil {
		return "", err
	}
	return f.String(), nil
}

func parseFlakeRef(ref string) (flakeRef, error) {
	bad := func(why string) (flakeRef, error) {
		return flakeRef{}, fmt.Errorf("flake reference %q: %s", redact.URLs(ref), why)
	}
	scheme, rest, ok := strings.Cut(ref, ":")
	if !ok || scheme == "" || strings.Contains(scheme, "/") {
		return bad("give its type, such as github:org/repo, git+https://host/repo, git+file:///srv/pkgs or path:/srv/pkgs (flake:nixpkgs for a registry name)")
	}
	switch {
	case strings.HasPrefix(scheme, "git+"):
		u, err := url.Parse(strings.TrimPrefix(ref, "git+"))
		if err != nil || u.Host == "" && u.Scheme != "file" || u.Path == "" {
			return bad("git+ takes a URL such as git+https://host/repo or git+file:///srv/pkgs")
		}
		if u.Fragment != "" {
			return bad("no #fragment: the image name says which packages")
		}
		q := u.Query()
		f := flakeRef{kind: "git", ref: q.Get("ref"), rev: q.Get("rev"), query: q}
		q.Del("ref")
		q.Del("rev")
		u.RawQuery = ""
		f.repo = u.String()
		f.base = "git+" + f.repo
		return f.check(ref)
	case scheme == "github" || scheme == "gitlab" || scheme == "sourcehut":
		path, rawQuery, _ := strings.Cut(rest, "?")
		q, err := url.ParseQuery(rawQuery)
		if err != nil {
			return bad(err.Error())
		}
		parts := strings.SplitN(path, "/", 3)
		if len(parts) < 2 || parts[0] == "" || parts[1] == "" || strings.Contains(path, "#") {
			return bad(scheme + ": takes owner/repo, with an optional /ref or /commit")
		}
		f := flakeRef{kind: scheme, ref: q.Get("ref"), rev: q.Get("rev"), query: q, base: scheme + ":" + parts[0] + "/" + parts[1]}
		if len(parts) == 3 {
			if commitRE.MatchString(parts[2]) {
				f.rev = parts[2]
			} else {
				f.ref = parts[2]
			}
		}
		q.Del("ref")
		q.Del("rev")
		host := map[string]string{"github": "github.com", "gitlab": "gitlab.com", "sourcehut": "git.sr.ht"}[scheme]
		if h := q.Get("host"); h != "" {
			host = h
		}
		owner, err := url.PathUnescape(parts[0]) // gitlab subgroups: group%2Fsub
		if err != nil {
			return bad(err.Error())
		}
		f.repo = "https://" + host + "/" + owner + "/" + parts[1]
		return f.check(ref)
	case scheme == "path":
		path, rawQuery, _ := strings.Cut(rest, "?")
		abs, err := filepath.Abs(path)
		if err != nil || path == "" {
			return bad("path: takes a directory")
		}
		if _, err := os.Stat(filepath.Join(abs, "flake.nix")); err != nil {
			return bad("the directory has no flake.nix: " + err.Error())
		}
		f := flakeRef{base: "path:" + abs}
		if rawQuery != "" {
			f.base += "?" + rawQuery
		}
		return f, nil
	}
	return flakeRef{base: ref}, nil
}

// check rejects a ref that cannot be a tag's: the tag grammar is the
// image name's (package image), and a ref of a flake is always a branch
// or tag name.
func (f flakeRef) check(ref string) (flakeRef, error) {
	if f.rev != "" && !commitRE.MatchString(f.rev) {
		return flakeRef{}, fmt.Errorf("flake reference %q: rev must be a full 40-digit commit", redact.URLs(ref))
	}
	return f, nil
}

// String is the reference as configured (absolute for a path).
func (f flakeRef) String() string {
	if f.kind == "" {
		return f.base
	}
	return f.at(f.ref, f.rev)
}

// at is the reference with ref and rev instead of its own.
func (f flakeRef) at(ref, rev string) string {
	q := url.Values{}
	for k, v := range f.query {
		q[k] = v
	}
	base := f.base
	if f.kind == "git" {
		if ref != "" {
			q.Set("ref", ref)
		}
		if rev != "" {
			q.Set("rev", rev)
		}
	} else if rev != "" {
		base += "/" + rev // github:owner/repo/<commit>: the commit alone locks it
	} else if ref != "" {
		base += "/" + ref
	}
	if len(q) == 0 {
		return base
	}
	return base + "?" + q.Encode()
}

func (s *FlakeSource) String() string { return "flake " + redact.URLs(s.Ref) }

func (s *FlakeSource) init() {
	s.once.Do(func() {
		s.parsed, s.err = parseFlakeRef(s.Ref)
		if s.err == nil && s.parsed.kind != "" {
			s.git = &GitSource{Repository: s.parsed.repo, TTL: s.TTL, timeout: s.timeout}
		}
	})
}

// remembered makes the bounded memories of lockings and failures if
// they are not yet; s.mu is held.
func (s *FlakeSource) remembered() {
	if s.locks == nil {
		s.locks = bounded.New[string, flakeLock](maxLocked)
		s.failed = bounded.NewExpiring[string, error](maxLocked, UnknownRefTTL, s.now)
	}
}

func (s *FlakeSource) now() time.Time {
	if s.nowFunc != nil {
		return s.nowFunc()
	}
	return time.Now()
}

func (s *FlakeSource) Resolve(ctx context.Context, tag string) (Resolved, error) {
	s.init()
	if s.err != nil {
		return Resolved{}, s.err
	}
	f := s.parsed
	if latest(tag) {
		tag = "latest"
	}
	var ask string // the reference given to Nix
	switch {
	case f.kind == "":
		if tag != "latest" {
			return Resolved{}, &nix.UnknownRevisionError{Source: s.String(), Tag: tag, Reason: "only a flake in git (git+…, github:, gitlab:, sourcehut:) has tags other than latest"}
		}
		ask = f.base
	case tag == "latest" && f.rev != "":
		ask = f.at(f.ref, f.rev)
	case commitRE.MatchString(tag):
		ask = f.at("", tag)
	default:
		name := tag
		if tag == "latest" && f.ref != "" {
			name = strings.TrimPrefix(strings.TrimPrefix(f.ref, "refs/heads/"), "refs/tags/")
		}
		res, err := s.git.lookup(ctx, name)
		var unknown *nix.UnknownRevisionError
		if errors.As(err, &unknown) {
			return Resolved{}, &nix.UnknownRevisionError{Source: s.String(), Tag: tag}
		}
		if err != nil {
			return Resolved{}, fmt.Errorf("%s: %w", s, err)
		}
		if f.kind == "git" {
			ask = f.at(res.ref, res.rev)
		} else {
			ask = f.at("", res.rev)
		}
	}
	md, err := s.lock(ctx, ask)
	if err != nil {
		return Resolved{}, err
	}
	rev := md.Revision
	if rev == "" {
		rev = md.NarHash
	}
	id := "flake:" + redact.WithoutUserinfo(f.at("", "")) + "@" + rev
	if !md.Pinned {
		// Nix locked inputs that the flake's lock file lacks as they are
		// now: they are part of what the package set is.
		id += "+locks:" + md.Locks
	}
	return Resolved{Type: "flake", Args: md.URL, Identity: id, Immutable: md.Pinned, Revision: rev}, nil
}

// lock locks the flake reference ref, reusing a locking that pins it for
// good, or one younger than TTL, and remembering a failure for
// UnknownRefTTL. It waits for the flight of ref until ctx ends.
func (s *FlakeSource) lock(ctx context.Context, ref string) (*nix.FlakeMetadata, error) {
	s.mu.Lock()
	now := s.now()
	s.remembered()
	if l, ok := s.locks.Get(ref); ok && (l.md.Pinned && l.md.Revision != "" || now.Sub(l.at) < s.TTL) {
		s.mu.Unlock()
		return l.md, nil
	}
	if ferr, ok := s.failed.Get(ref); ok {
		s.mu.Unlock()
		// The error itself, so that a missing commit is answered as the
		// first time (404), not as a failure of a new kind.
		return nil, fmt.Errorf("%s: locking %s failed less than %s ago; not trying again yet: %w", s, redact.URLs(ref), UnknownRefTTL, ferr)
	}
	s.mu.Unlock()
	var joined func()
	if s.waiting != nil {
		joined = func() { s.waiting(ref) }
	}
	md, err := s.calls.Do(ctx, ref, s.lockTimeout(), func(ctx context.Context) (*nix.FlakeMetadata, error) {
		return s.fly(ctx, ref)
	}, joined)
	if err != nil && ctx.Err() != nil {
		return nil, fmt.Errorf("locking %s: %w", s, err)
	}
	return md, err
}

func (s *FlakeSource) lockTimeout() time.Duration {
	if s.timeout > 0 {
		return s.timeout
	}
	return FlakeLockTimeout
}

// fly locks ref and records the outcome.
func (s *FlakeSource) fly(ctx context.Context, ref string) (*nix.FlakeMetadata, error) {
	md, err := s.metadata(ctx, ref)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.remembered()
	switch {
	case err == nil:
		s.locks.Put(ref, flakeLock{md: md, at: s.now()})
	case ctx.Err() == nil:
		// Nix failed on its own (a missing commit, a broken flake), not
		// because it was stopped: do not ask again at once.
		s.failed.Put(ref, err)
	}
	return md, err
}

// metadata runs `nix flake metadata` for ref once a slot is free.
func (s *FlakeSource) metadata(ctx context.Context, ref string) (*nix.FlakeMetadata, error) {
	release, err := s.slots.acquire(ctx, maxFlakeLocks)
	if err != nil {
		return nil, fmt.Errorf("locking %s: waited %s for one of %d lockings: %w", s, s.lockTimeout(), maxFlakeLocks, err)
	}
	defer release()
	if s.locking != nil {
		s.locking(ctx, ref)
	}
	r := s.Nix
	if r == nil {
		r = &nix.Runner{}
	}
	md, err := r.FlakeMetadata(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("locking %s: %w", s, err)
	}
	return md, nil
}

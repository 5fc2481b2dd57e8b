package source

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nixery/nixery/internal/bounded"
	"github.com/nixery/nixery/internal/flight"
	"github.com/nixery/nixery/internal/nix"
	"github.com/nixery/nixery/internal/redact"
)

// GitTimeout bounds one resolution of a branch or tag name: waiting for a
// free git slot and running `git ls-remote`. A remote that does not answer
// within it fails the resolution (and the pull) instead of holding it.
const GitTimeout = 30 * time.Second

// UnknownRefTTL is how long a name the repository lacks is remembered, so
// that a client (or crawler) naming random tags does not run git for every
// request. A branch or tag pushed meanwhile is found once it has passed.
const UnknownRefTTL = 30 * time.Second

// maxGitProcesses bounds the git processes one source runs at once;
// resolutions of other names wait for a slot (within GitTimeout).
const maxGitProcesses = 4

// maxUnknownRefs bounds the memory of unknown names.
const maxUnknownRefs = 4096

// gitOutputLimit bounds what is kept of git's stdout (a few refs here)
// and stderr, so a hostile remote cannot fill memory.
const gitOutputLimit = 1 << 20

// gitWaitDelay is how long Wait waits for git's output pipes to close
// once git has exited or been killed: a helper that escaped the process
// group and holds stderr open must not hang the resolution.
const gitWaitDelay = 2 * time.Second

// GitSource is a git repository holding a package set (NIXERY_PKGS_REPO).
// The image tag selects a branch, tag or full commit; "latest" means the
// repository's default branch. Branch and tag names are resolved to a
// commit with `git ls-remote`, and the commit is the cache identity; a
// resolution is reused for TTL so that warm pulls do not ask the remote.
//
// Resolution is built to meet a broken or hostile network: one git
// process per name at a time, however many pulls ask for it (a flight
// that ends when its last waiter leaves); at most maxGitProcesses at
// once; each in a process group of its own that is killed as a whole
// when GitTimeout passes, so that helpers (git-remote-https, ssh) cannot
// outlive it; no prompts for credentials; names the repository lacks are
// remembered for UnknownRefTTL.
//
// The repository URL may carry credentials (https://user:token@host/…):
// git and Nix get them; String, Identity and every error show the URL
// redacted (package redact).
type GitSource struct {
	Repository string
	TTL        time.Duration // how long a resolved name is reused

	// For tests: GitTimeout and UnknownRefTTL if 0, time.Now if nil;
	// hooks called as each git process starts, as a caller starts
	// waiting for a flight and as a flight ends.
	timeout, unknownTTL time.Duration
	now                 func() time.Time
	started             func(pid int)
	waiting             func(tag string)
	finished            func(tag string, err error)

	mu      sync.Mutex
	cache   map[string]gitResolution
	unknown *bounded.Map[string, struct{}]      // names found missing, for UnknownRefTTL
	calls   flight.Group[string, gitResolution] // resolutions in flight, by name
	slots   slots                               // one per running git process
}

type gitResolution struct {
	ref, rev string
	at       time.Time
}

func (s *GitSource) String() string { return "git repository " + redact.URLs(s.Repository) }

func (s *GitSource) Resolve(ctx context.Context, tag string) (Resolved, error) {
	if tag == "" {
		tag = "latest"
	}
	if commitRE.MatchString(tag) {
		return s.resolved(map[string]any{"url": s.Repository, "rev": tag, "allRefs": true}, tag)
	}
	res, err := s.lookup(ctx, tag)
	if err != nil {
		return Resolved{}, err
	}
	return s.resolved(map[string]any{"url": s.Repository, "ref": res.ref, "rev": res.rev}, res.rev)
}

// resolved renders args for Nix, which gets the real URL. The identity
// leaves the credentials out: they are no part of what the package set
// is, and a changed token must not make every image new.
func (s *GitSource) resolved(args map[string]any, rev string) (Resolved, error) {
	b, err := json.Marshal(args)
	if err != nil {
		return Resolved{}, err
	}
	return Resolved{Type: "git", Args: string(b), Identity: "git:" + redact.WithoutUserinfo(s.Repository) + "@" + rev, Immutable: true, Revision: rev}, nil
}

func (s *GitSource) clock() time.Time {
	if s.now != nil {
		return s.now()
	}
	return time.Now()
}

// lookup resolves a branch or tag name (or "latest") to a full ref and
// commit, reusing a resolution younger than TTL and remembering a missing
// name for UnknownRefTTL. It waits for the flight of tag until ctx ends.
func (s *GitSource) lookup(ctx context.Context, tag string) (gitResolution, error) {
	s.mu.Lock()
	now := s.clock()
	if r, ok := s.cache[tag]; ok && now.Sub(r.at) < s.TTL {
		s.mu.Unlock()
		return r, nil
	}
	if _, ok := s.unknownRefs().Get(tag); ok {
		s.mu.Unlock()
		return gitResolution{}, &nix.UnknownRevisionError{Source: s.String(), Tag: tag}
	}
	s.mu.Unlock()
	var joined func()
	if s.waiting != nil {
		joined = func() { s.waiting(tag) }
	}
	r, err := s.calls.Do(ctx, tag, s.gitTimeout(), func(ctx context.Context) (gitResolution, error) {
		return s.fly(ctx, tag)
	}, joined)
	if err != nil && ctx.Err() != nil {
		return gitResolution{}, fmt.Errorf("resolving %q in %s: %w", tag, s, err)
	}
	return r, err
}

// fly runs the resolution of tag and records its outcome.
func (s *GitSource) fly(ctx context.Context, tag string) (gitResolution, error) {
	r, err := s.lsRemote(ctx, tag)
	s.mu.Lock()
	var unknown *nix.UnknownRevisionError
	switch {
	case err == nil:
		r.at = s.clock()
		if s.cache == nil {
			s.cache = map[string]gitResolution{}
		}
		s.cache[tag] = r
	case errors.As(err, &unknown):
		s.unknownRefs().Put(tag, struct{}{})
	}
	s.mu.Unlock()
	if s.finished != nil {
		s.finished(tag, err)
	}
	return r, err
}

// unknownRefs is the bounded record of missing names (expired names
// go first when it is full); s.mu is held.
func (s *GitSource) unknownRefs() *bounded.Map[string, struct{}] {
	if s.unknown == nil {
		s.unknown = bounded.NewExpiring[string, struct{}](maxUnknownRefs, s.unknownRefTTL(), s.clock)
	}
	return s.unknown
}

func (s *GitSource) gitTimeout() time.Duration {
	if s.timeout > 0 {
		return s.timeout
	}
	return GitTimeout
}

func (s *GitSource) unknownRefTTL() time.Duration {
	if s.unknownTTL > 0 {
		return s.unknownTTL
	}
	return UnknownRefTTL
}

// lsRemote asks the remote for tag, within ctx, once a git slot is free.
func (s *GitSource) lsRemote(ctx context.Context, tag string) (gitResolution, error) {
	release, err := s.slots.acquire(ctx, maxGitProcesses)
	if err != nil {
		return gitResolution{}, s.stopped(ctx, tag, fmt.Sprintf("waited for one of %d git processes", maxGitProcesses))
	}
	defer release()

	patterns := []string{"refs/heads/" + tag, "refs/tags/" + tag, "refs/tags/" + tag + "^{}"}
	if tag == "latest" {
		patterns = []string{"HEAD"}
	}
	cmd, finish := gitCommand(ctx, append([]string{"ls-remote", "--symref", "--", s.Repository}, patterns...)...)
	stdout, stderr := &limitedBuffer{max: gitOutputLimit}, &limitedBuffer{max: 4 << 10}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err = cmd.Start()
	if err == nil {
		if s.started != nil {
			s.started(cmd.Process.Pid)
		}
		err = cmd.Wait()
		finish()
	}
	if ctx.Err() != nil {
		return gitResolution{}, s.stopped(ctx, tag, "git ls-remote ran")
	}
	if err != nil {
		// git's messages may repeat the URL, credentials and all.
		return gitResolution{}, fmt.Errorf("git ls-remote %s: %w: %s", redact.URLs(s.Repository), err, redact.URLs(strings.TrimSpace(stderr.String())))
	}
	if stdout.over {
		return gitResolution{}, fmt.Errorf("git ls-remote %s: more than %d bytes of output", redact.URLs(s.Repository), gitOutputLimit)
	}
	r, ok := parseLsRemote(stdout.Bytes(), tag)
	if !ok {
		return gitResolution{}, &nix.UnknownRevisionError{Source: s.String(), Tag: tag}
	}
	return r, nil
}

// stopped is the error of a resolution that ctx ended.
func (s *GitSource) stopped(ctx context.Context, tag, what string) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("resolving %q in %s: %s for %s without an answer: %w", tag, s, what, s.gitTimeout(), context.DeadlineExceeded)
	}
	return fmt.Errorf("resolving %q in %s: %w", tag, s, ctx.Err())
}

// gitCommand prepares a git process that cannot ask anyone anything, in
// a process group of its own that ctx's end kills as a whole: git runs
// its transports as child processes (git-remote-https, ssh), which would
// otherwise survive it, orphaned, holding its stderr open. Call finish
// once Wait has returned: it kills whatever is left of the group.
func gitCommand(ctx context.Context, args ...string) (cmd *exec.Cmd, finish func()) {
	cmd = exec.CommandContext(ctx, "git", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return err
		}
		return nil
	}
	cmd.WaitDelay = gitWaitDelay
	// No prompts: a terminal prompt would wait forever for nobody, and an
	// askpass program (an empty GIT_ASKPASS stops git from falling back
	// to core.askPass and SSH_ASKPASS) might open a window on a desktop.
	cmd.Env = append(cmd.Environ(), "GIT_TERMINAL_PROMPT=0", "GIT_ASKPASS=", "SSH_ASKPASS=")
	finish = func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) } // ESRCH, the usual case, is fine
	return cmd, finish
}

// limitedBuffer keeps the first max bytes written to it and notes whether
// there were more.
type limitedBuffer struct {
	bytes.Buffer
	max  int
	over bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if room := b.max - b.Len(); len(p) > room {
		p, b.over = p[:max(room, 0)], true
	}
	b.Buffer.Write(p)
	return n, nil
}

// parseLsRemote picks the ref and commit for tag from `git ls-remote
// --symref` output. A branch wins over a tag of the same name (as git's
// own lookup order has it); an annotated tag is peeled to its commit.
func parseLsRemote(out []byte, tag string) (gitResolution, bool) {
	refs := map[string]string{}
	headRef := ""
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "ref: "); ok {
			if target, name, ok := strings.Cut(rest, "\t"); ok && name == "HEAD" {
				headRef = target
			}
			continue
		}
		if rev, name, ok := strings.Cut(line, "\t"); ok {
			refs[name] = rev
		}
	}
	if tag == "latest" {
		if headRef == "" || refs["HEAD"] == "" {
			return gitResolution{}, false
		}
		return gitResolution{ref: headRef, rev: refs["HEAD"]}, true
	}
	if rev := refs["refs/heads/"+tag]; rev != "" {
		return gitResolution{ref: "refs/heads/" + tag, rev: rev}, true
	}
	if rev := refs["refs/tags/"+tag+"^{}"]; rev != "" {
		return gitResolution{ref: "refs/tags/" + tag, rev: rev}, true
	}
	if rev := refs["refs/tags/"+tag]; rev != "" {
		return gitResolution{ref: "refs/tags/" + tag, rev: rev}, true
	}
	return gitResolution{}, false
}

package nix

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/nixery/nixery/internal/redact"
)

// stopGrace is how long a cancelled Nix process group has between SIGTERM
// and SIGKILL.
//
// Why not SIGKILL at once: Nix runs each builder in a session of its own
// (and, as root, as a build user), out of reach of a signal to our process
// group. On SIGTERM Nix kills its builders before it exits; killed at once,
// it would leave them running, orphaned, for as long as they like.
const stopGrace = 5 * time.Second

// tailLines is how many lines of stderr a BuildError keeps.
const tailLines = 15

// MaxLineBytes bounds one line of Nix's stderr as it is logged, kept for
// errors and sent to build progress: a builder may print megabytes
// without a newline (minified output, a binary by mistake). Longer lines
// are cut at a UTF-8 character boundary and end in a note saying so.
const MaxLineBytes = 4 << 10

// maxScanBytes bounds what is held of one line while it is read: enough
// to recognise build.nix's unknown-packages line and to redact URLs
// before the cut; the rest of a longer line is counted, not kept.
const maxScanBytes = 64 << 10

// run runs one Nix command with stdout written to stdout, every stderr
// line passed to r.Log and remembered for errors. It returns an error
// wrapping ErrTimeout if ctx's deadline stopped it, ctx.Err() if ctx was
// cancelled, an *UnknownPackagesError if build.nix reported unknown
// names, an *UnknownRevisionError if the package set's commit
// (lineWriter.sourceRev) does not exist, and a *BuildError for any other
// failure.
func (r *Runner) run(ctx context.Context, stdout io.Writer, logLine func(string), name string, args ...string) error {
	return r.runWith(ctx, stdout, &lineWriter{log: logLine}, name, args...)
}

// runWith is run with stderr read by the given lineWriter, for a caller
// that wants what it recognised (lineWriter.programs).
func (r *Runner) runWith(ctx context.Context, stdout io.Writer, stderr *lineWriter, name string, args ...string) error {
	start := time.Now()
	stderr.hide = r.Cache.hidden()
	cmd, finish := command(ctx, name, args...)
	cmd.Stdout = stdout
	cmd.Stderr = stderr

	err := cmd.Start()
	if err == nil {
		if r.started != nil {
			r.started(cmd)
		}
		err = cmd.Wait()
		finish()
	}
	stderr.flush()
	elapsed := time.Since(start)
	log := r.logger().With("cmd", name, "duration", elapsed.Round(time.Millisecond))

	if ctxErr := ctx.Err(); ctxErr != nil && err != nil {
		log.Warn("nix stopped", "reason", ctxErr)
		if errors.Is(ctxErr, context.DeadlineExceeded) {
			limit := ""
			if r.Timeout > 0 {
				limit = fmt.Sprintf(", limit %s", r.Timeout)
			}
			return fmt.Errorf("%w: %s stopped after %s%s; raise NIX_TIMEOUT to allow longer builds",
				ErrTimeout, name, elapsed.Round(100*time.Millisecond), limit)
		}
		return fmt.Errorf("%s stopped: %w", name, ctxErr)
	}
	if err != nil {
		if u := stderr.unknown; u != nil {
			log.Info("nix: unknown packages", "packages", u.Packages)
			return u
		}
		if stderr.sourceMissing {
			log.Info("nix: the package set's commit does not exist", "rev", stderr.sourceRev)
			return &UnknownRevisionError{Rev: stderr.sourceRev}
		}
		log.Warn("nix failed", "err", err)
		return &BuildError{Tail: stderr.tail, Err: fmt.Errorf("%s: %w", name, err)}
	}
	log.Debug("nix done")
	return nil
}

// command prepares a Nix process in its own process group whose
// cancellation (by ctx) stops the whole group: SIGTERM first, SIGKILL
// after stopGrace. Call finish once Wait has returned: it kills whatever
// is left of the group (children that outlived Nix) and stops the timer.
func command(ctx context.Context, name string, args ...string) (cmd *exec.Cmd, finish func()) {
	var (
		mu    sync.Mutex
		done  bool
		timer *time.Timer
	)
	cmd = exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		mu.Lock()
		defer mu.Unlock()
		if done {
			return nil
		}
		pgid := cmd.Process.Pid
		timer = time.AfterFunc(stopGrace, func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) })
		if err := syscall.Kill(-pgid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
			return err
		}
		return nil
	}
	// A backstop: if something still holds stderr open after the group
	// was killed, stop waiting for it.
	cmd.WaitDelay = stopGrace + 2*time.Second
	finish = func() {
		mu.Lock()
		defer mu.Unlock()
		done = true
		if timer != nil {
			timer.Stop()
		}
		// ESRCH, the usual case, is fine.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	return cmd, finish
}

// lineWriter splits what Nix writes to stderr into lines, redacts the
// credentials of URLs and the hidden texts in them, cuts them to
// MaxLineBytes, passes each to log, keeps the last tailLines meaningful
// ones (see meaningful) and recognises the unknown-packages error and
// the main-programs trace of build.nix. It holds at most maxScanBytes of
// a line, however long the line.
type lineWriter struct {
	log  func(string)
	hide []string // texts replaced by hiddenMask (the secret key file's path)

	mu      sync.Mutex
	partial []byte // the line so far, up to maxScanBytes
	dropped int    // bytes of the line beyond maxScanBytes
	cr      bool   // the line so far ended in a carriage return
	tail    []string
	inFrame bool // the tail is skipping a frame of Nixery's expressions
	unknown *UnknownPackagesError

	// sourceRev is the commit a git package set is fetched at;
	// sourceMissing says Git or Nix said that commit does not exist (a
	// dependency's missing commit, before or after, does not count).
	sourceRev     string
	sourceMissing bool

	// packages is build.nix's trace of what each name resolved to; only
	// the first one counts, so a builder printing a look-alike later
	// changes nothing.
	packages    []Resolution
	sawPackages bool
	evaluated   func() // called when the packages trace is seen

	// metas are build.nix's nixery-meta lines, by name: in batch mode
	// any of them, else only those before the packages trace (which
	// evaluation prints before anything is built, so that no builder's
	// output can pass for one). At most maxResolved.
	metas map[string]Meta

	// batch: build.nix runs in batch mode (Resolve), whose trace is a
	// line per resolved name, collected in resolved. Only nix-instantiate
	// writes them: it runs no builder that could print a look-alike.
	batch    bool
	resolved []Resolution

	// listing: search.nix runs (Packages), whose trace names each
	// package it left out because JSON cannot carry it: the first
	// maxUnprintable names, and how many there were in all.
	listing          bool
	unprintable      []string
	unprintableCount int
}

// Write takes lines that end in "\n" (or "\r\n"). A carriage return
// alone means what it means on a terminal: the text after it overwrites
// the line so far. That is how git draws its progress meter ("Receiving
// objects:  42% (…)\r", a hundred times, then "…, done.\n"), which Nix
// 2.33 and later pass on (git fetch --progress): of each meter only its
// final state is a line.
func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		if w.cr {
			w.cr = false
			if p[0] != '\n' { // not "\r\n": overwritten
				w.partial, w.dropped = w.partial[:0], 0
			}
		}
		end := bytes.IndexAny(p, "\r\n")
		chunk := p
		if end >= 0 {
			chunk = p[:end]
		}
		if room := maxScanBytes - len(w.partial); len(chunk) > room {
			w.dropped += len(chunk) - room
			chunk = chunk[:room]
		}
		w.partial = append(w.partial, chunk...)
		if end < 0 {
			break
		}
		if p[end] == '\r' {
			w.cr = true
		} else {
			w.emit()
		}
		p = p[end+1:]
	}
	return n, nil
}

// flush handles a last line without a newline (such as the last state
// of a progress meter that was stopped).
func (w *lineWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.partial) > 0 || w.dropped > 0 {
		w.emit()
	}
	w.partial, w.cr = nil, false
}

// emit hands on the line read so far and starts the next.
func (w *lineWriter) emit() {
	w.line(string(w.partial), w.dropped)
	w.partial, w.dropped = w.partial[:0], 0
}

// line handles one line, of which dropped bytes beyond l were not kept.
func (w *lineWriter) line(l string, dropped int) {
	size := len(l) + dropped
	// Nix repeats source URLs in its messages ("… of repository
	// 'https://user:token@host/…'"): credentials go no further.
	l = redact.URLs(strings.TrimRight(ansiRE.ReplaceAllString(l, ""), " \t\r"))
	for _, h := range w.hide {
		l = strings.ReplaceAll(l, h, hiddenMask)
	}
	if u := unknownError(l); u != nil {
		w.unknown = u
	}
	if w.sourceRev != "" && missingRev(l) == w.sourceRev {
		w.sourceMissing = true
	}
	if rest, ok := strings.CutPrefix(l, packagesMarker); ok && !w.sawPackages && dropped == 0 {
		// Evaluation traces it before anything is built. It is
		// Nixery's own line, not Nix's news: not logged.
		w.sawPackages = true
		if json.Unmarshal([]byte(rest), &w.packages) != nil {
			w.packages = nil
		}
		if w.evaluated != nil {
			w.evaluated()
		}
		return
	}
	if rest, ok := strings.CutPrefix(l, metaMarker); ok && (w.batch || !w.sawPackages) {
		var m struct {
			Name string `json:"name"`
			Meta
		}
		if dropped == 0 && len(w.metas) < maxResolved && json.Unmarshal([]byte(rest), &m) == nil && m.Name != "" {
			if w.metas == nil {
				w.metas = map[string]Meta{}
			}
			if _, ok := w.metas[m.Name]; !ok {
				if len(m.Licenses) == 0 {
					m.Licenses = nil // Nix says []
				}
				w.metas[m.Name] = m.Meta
			}
		}
		return
	}
	if rest, ok := strings.CutPrefix(l, resolvedMarker); ok && w.batch {
		var res Resolution
		if dropped == 0 && len(w.resolved) < maxResolved && json.Unmarshal([]byte(rest), &res) == nil && res.Name != "" {
			w.resolved = append(w.resolved, res)
		}
		return
	}
	if rest, ok := strings.CutPrefix(l, unprintableMarker); ok && w.listing {
		if w.unprintableCount++; len(w.unprintable) < maxUnprintable {
			w.unprintable = append(w.unprintable, strings.ToValidUTF8(rest, "\uFFFD"))
		}
		return
	}
	if dropped > 0 || len(l) > MaxLineBytes {
		l = cutLine(l, size)
	}
	if w.log != nil {
		w.log(l)
	}
	if w.meaningful(l) {
		w.keep(l)
	}
}

// meaningful says whether a line of Nix's belongs in an error's tail:
// not a blank line, not Nix's hint to use --show-trace (in any of its
// forms), not the bare "error:" that heads a trace, and not a frame of
// Nixery's own expressions (build.nix, load.nix, search.nix), which Nix
// quotes since 2.13: the "… while …" line that introduces it, its
// position "at «string»:12:5:" and the numbered source lines and caret
// line that follow. Frames of the package set's files stay: they say
// where its error is.
func (w *lineWriter) meaningful(l string) bool {
	t := strings.TrimSpace(l)
	if w.inFrame {
		if t == "" || sourceLineRE.MatchString(t) {
			return false
		}
		w.inFrame = false
	}
	switch {
	case t == "" || t == "error:" || showTraceRE.MatchString(t):
		return false
	case embeddedFrameRE.MatchString(t):
		w.inFrame = true
		if n := len(w.tail); n > 0 && strings.HasPrefix(strings.TrimSpace(w.tail[n-1]), "… ") {
			w.tail = w.tail[:n-1]
		}
		return false
	}
	return true
}

// keep adds a line to the tail, which holds the last tailLines.
func (w *lineWriter) keep(l string) {
	w.tail = append(w.tail, l)
	if len(w.tail) > tailLines {
		w.tail = w.tail[len(w.tail)-tailLines:]
	}
}

// showTraceRE matches Nix's hint at the end of an evaluation error, in
// each of its forms: "(use '--show-trace' to show detailed location
// information)" (Nix up to about 2.12), "(stack trace truncated; use
// '--show-trace' to show the full trace)" and "… the full, detailed
// trace)" (later Nix, and Lix).
var showTraceRE = regexp.MustCompile(`^\((?:[^()]*; )?use '--show-trace' to show [^()]*\)$`)

// embeddedFrameRE matches the position of a frame in an expression that
// Nix was given as a string rather than a file: Nixery's own (--expr
// build.nix or search.nix, --arg load load.nix). A package set is read
// from files, whatever its source, so its frames name a path.
var embeddedFrameRE = regexp.MustCompile(`^at «string»:\d+:\d+:?$`)

// sourceLineRE matches a line of source that Nix quotes under a frame's
// position, "12| foo = …", or the line of its caret, "| ^" (trimmed).
var sourceLineRE = regexp.MustCompile(`^\d*\|`)

// packagesMarker starts build.nix's trace of the resolved packages;
// resolvedMarker its trace of one resolved name in batch mode;
// metaMarker its trace of one package's meta. At most maxResolved
// resolutions (and metas) of one batch are kept (a batch asks for far
// fewer names).
const (
	maxResolved    = 4096
	packagesMarker = "trace: nixery-packages: "
	resolvedMarker = "trace: nixery-resolved: "
	metaMarker     = "trace: nixery-meta: "
)

// unprintableMarker starts search.nix's trace of a package it left out
// of the listing because JSON cannot carry its strings; at most
// maxUnprintable of their names are kept.
const (
	unprintableMarker = "trace: nixery-unprintable: "
	maxUnprintable    = 20
)

// cutLine cuts l, a line of size bytes in all, to MaxLineBytes at a UTF-8
// character boundary and says so at its end. A URL the cut goes through
// is masked: its password's "@" may be in the part cut off.
func cutLine(l string, size int) string {
	n := min(len(l), MaxLineBytes)
	// Back off to the start of a character that this cut, or the one at
	// maxScanBytes, goes through.
	for i := n - 1; i >= 0 && i >= n-utf8.UTFMax; i-- {
		if utf8.RuneStart(l[i]) {
			if !utf8.FullRuneInString(l[i:n]) {
				n = i
			}
			break
		}
	}
	return redact.Cut(l[:n]) + fmt.Sprintf(" … [line cut: %d bytes]", size)
}

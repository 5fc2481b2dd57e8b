package buildclient

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/term"

	"github.com/nixery/nixery/internal/builder"
)

// View shows build events to a person.
type View interface {
	// Event shows one event.
	Event(builder.Event)
	// End finishes the output (the bar's line); call it once, after the
	// last event.
	End()
}

// NewView is the view for w: nothing if quiet, a progress bar if w is a
// terminal, one line per event otherwise (logs, CI).
func NewView(w io.Writer, quiet bool) View {
	switch {
	case quiet:
		return nopView{}
	case isTerminal(w):
		return &barView{w: w, start: time.Now()}
	}
	return &plainView{w: w}
}

type nopView struct{}

func (nopView) Event(builder.Event) {}
func (nopView) End()                {}

// plainView prints one line per event, for logs (stdout not a terminal),
// but for the pack's progress: a line every plainEvery at most, and the
// last one.
type plainView struct {
	w    io.Writer
	pack packRate
	last time.Time // of the last progress line, by the server's clock
}

// plainEvery is how often at most the plain view prints the progress.
const plainEvery = 5 * time.Second

func (v *plainView) Event(e builder.Event) {
	v.pack.see(e)
	switch e.Kind {
	case "progress":
		if e.Bytes >= e.Total || v.last.IsZero() || e.Time.Sub(v.last) >= plainEvery {
			v.last = e.Time
			fmt.Fprintf(v.w, "  %s\n", v.pack.describe(e))
		}
	case "queued":
		fmt.Fprintf(v.w, "queued %s\n", e.Message)
	case "phase":
		fmt.Fprintf(v.w, "phase %s %s\n", e.Phase, e.Message)
	case "log":
		fmt.Fprintf(v.w, "  %s\n", e.Message)
	case "done":
		fmt.Fprintf(v.w, "done %s\n", e.Message)
	case "error":
		fmt.Fprintf(v.w, "error\n")
	}
}

func (v *plainView) End() {}

// barView redraws one line: a bar over the build's phases, the current
// phase, the time so far and Nix's last log line.
type barView struct {
	w       io.Writer
	start   time.Time
	mu      sync.Mutex
	stop    chan struct{}
	phase   int // index in builder.Phases of the current phase; -1 before
	started bool
	last    string
	pack    packRate
	packed  float64 // the part of the pack phase done, from its progress
	// now is the clock of the time shown; time.Now unless a test sets it.
	now func() time.Time
}

func (v *barView) Event(e builder.Event) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.started {
		v.started, v.phase = true, -1
		// Redraw every half second, so that the clock runs while Nix
		// is quiet.
		v.stop = make(chan struct{})
		go func() {
			t := time.NewTicker(500 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-t.C:
					v.mu.Lock()
					v.draw()
					v.mu.Unlock()
				case <-v.stop:
					return
				}
			}
		}()
	}
	v.pack.see(e)
	switch e.Kind {
	case "progress":
		if e.Total > 0 {
			v.packed = float64(e.Bytes) / float64(e.Total)
		}
		v.last = v.pack.describe(e)
	case "phase":
		for i, p := range builder.Phases {
			if p == e.Phase {
				v.phase = i
			}
		}
		v.last = e.Message
	case "log", "queued":
		v.last = e.Message
	case "done":
		v.phase, v.last = len(builder.Phases), e.Message
	case "error":
		v.last = "failed"
	}
	v.draw()
}

func (v *barView) draw() {
	const width = 20
	n := len(builder.Phases)
	filled := 0
	if v.phase >= 0 {
		part := float64(v.phase)
		if v.phase < n && builder.Phases[v.phase] == "pack" {
			part += v.packed
		}
		filled = min(width, int(width*part/float64(n)))
	}
	name := "waiting"
	switch {
	case v.phase >= n:
		name = "done"
	case v.phase >= 0:
		name = fmt.Sprintf("%d/%d %s", v.phase+1, n, builder.Phases[v.phase])
	}
	line := fmt.Sprintf("[%s%s] %-14s %5.1fs  %s", strings.Repeat("#", filled), strings.Repeat("-", width-filled),
		name, v.clock().Sub(v.start).Seconds(), v.last)
	if len(line) > 100 {
		line = cutRunes(line, 100)
	}
	// \r and erase-line: the bar redraws itself in place.
	fmt.Fprintf(v.w, "\r\x1b[2K%s", line)
}

func (v *barView) clock() time.Time {
	if v.now != nil {
		return v.now()
	}
	return time.Now()
}

func (v *barView) End() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.started {
		close(v.stop)
		v.started = false
		fmt.Fprintln(v.w)
	}
}

// isTerminal reports whether w is a terminal (golang.org/x/term asks the
// terminal driver; /dev/null, a character device too, is not one).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// cutRunes cuts s to at most n bytes, at a rune boundary.
func cutRunes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// packRate follows a build's pack: when it started (its phase event, by
// the server's clock), so that a progress event tells the rate so far
// and the time left.
type packRate struct{ start time.Time }

func (r *packRate) see(e builder.Event) {
	if e.Kind == "phase" && e.Phase == "pack" {
		r.start = e.Time
	}
}

// describe says how far the pack is, and the time left at the rate so
// far (once 1 % is packed): "packed 12.0 of 48.0 MiB (25%), about 3s
// left"; when done,
// "packed 48.0 MiB in 4.0s". The bytes are uncompressed tar bytes.
func (r *packRate) describe(e builder.Event) string {
	const mib = 1 << 20
	took := e.Time.Sub(r.start)
	if r.start.IsZero() || took < 0 {
		took = 0
	}
	if e.Bytes >= e.Total {
		return fmt.Sprintf("packed %.1f MiB in %.1fs", float64(e.Total)/mib, took.Seconds())
	}
	s := fmt.Sprintf("packed %.1f of %.1f MiB (%d%%)", float64(e.Bytes)/mib, float64(e.Total)/mib, e.Bytes*100/e.Total)
	if e.Bytes*100 >= e.Total && took > 0 { // the rate of the first 1 % says little
		left := time.Duration(float64(took) * float64(e.Total-e.Bytes) / float64(e.Bytes))
		if left < time.Second {
			s += ", under a second left"
		} else {
			s += fmt.Sprintf(", about %s left", left.Round(time.Second))
		}
	}
	return s
}

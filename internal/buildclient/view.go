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

// plainView prints one line per event, for logs (stdout not a terminal).
type plainView struct{ w io.Writer }

func (v *plainView) Event(e builder.Event) {
	switch e.Kind {
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
	switch e.Kind {
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
		filled = width * v.phase / n
	}
	name := "waiting"
	switch {
	case v.phase >= n:
		name = "done"
	case v.phase >= 0:
		name = fmt.Sprintf("%d/%d %s", v.phase+1, n, builder.Phases[v.phase])
	}
	line := fmt.Sprintf("[%s%s] %-14s %5.1fs  %s", strings.Repeat("#", filled), strings.Repeat("-", width-filled),
		name, time.Since(v.start).Seconds(), v.last)
	if len(line) > 100 {
		line = cutRunes(line, 100)
	}
	// \r and erase-line: the bar redraws itself in place.
	fmt.Fprintf(v.w, "\r\x1b[2K%s", line)
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

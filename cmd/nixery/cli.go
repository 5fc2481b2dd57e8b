package main

import (
	"unicode/utf8"

	"golang.org/x/term"

	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nixery/nixery/internal/builder"
	"github.com/nixery/nixery/internal/config"
	"github.com/nixery/nixery/internal/image"
	"github.com/nixery/nixery/internal/web"
)

// defaultServer is the Nixery that `nixery build` asks when neither
// --server nor NIXERY_URL says otherwise.
const defaultServer = "http://127.0.0.1:8080"

// buildCmd is `nixery build [--server URL] <image>[:tag]`: it asks a
// running Nixery to build an image (or joins the build in flight), shows
// its phases as they happen, and prints the pull command, so that CI can
// warm images before `docker pull`. It follows the server's event stream
// (/api/build/<image>/events), the one the web page shows.
func buildCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("nixery build", flag.ContinueOnError)
	fs.SetOutput(stderr)
	server := fs.String("server", envOr("NIXERY_URL", defaultServer), "the Nixery to ask (env NIXERY_URL)")
	quiet := fs.Bool("quiet", false, "print only the pull command (and errors)")
	local := fs.Bool("local", false, "build in this process, into the storage serve is configured with (the flags below and their environment variables), instead of asking a server")
	load := config.Settings(fs, os.Getenv)
	fs.Usage = func() {
		fmt.Fprintf(stderr, `Usage: nixery build [--server URL | --local] [--quiet] <image>[:tag]

Asks a running Nixery to build an image (or waits for the build in flight),
shows its progress, and prints the pull command. Exits non-zero if the
build fails.

Example:
  nixery build --server http://registry.example:8080 shell/git

With --local, every flag of serve configures the build, as for serve:

`)
		fs.SetOutput(stderr)
		fs.PrintDefaults()
	}
	// Flags may come after the image name too.
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(positional) != 1 {
		fs.Usage()
		return 2
	}
	ref := strings.TrimPrefix(positional[0], "/")
	req, err := image.ParseRef(ref)
	if err != nil {
		fmt.Fprintf(stderr, "nixery build: %v\n", err)
		return 2
	}
	base, err := url.Parse(strings.TrimRight(*server, "/"))
	if err != nil || base.Host == "" || (base.Scheme != "http" && base.Scheme != "https") {
		fmt.Fprintf(stderr, "nixery build: --server must be an http(s) URL such as %s, not %q\n", defaultServer, *server)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var show progressView = &plainView{w: stdout}
	if *quiet {
		show = nopView{}
	} else if isTerminal(stdout) {
		show = &barView{w: stdout, start: time.Now()}
	}
	var final builder.Event
	if *local {
		var host string
		final, host, err = buildLocally(ctx, load, req, show, stderr)
		base = &url.URL{Scheme: "http", Host: host}
	} else {
		final, err = followBuild(ctx, base.String()+web.EventsPath(req.Ref()), show)
	}
	show.end()
	if err != nil {
		fmt.Fprintf(stderr, "nixery build: %s: %v\n", req.Ref(), err)
		return 1
	}
	if final.Kind == "error" {
		fmt.Fprintf(stderr, "nixery build: %s failed:\n%s\n", req.Ref(), final.Message)
		return 1
	}
	if !*quiet {
		fmt.Fprintf(stdout, "image ready: %s (%s)\n", req.Ref(), final.Digest)
	}
	pull := base.Host + "/" + req.Ref()
	if base.Scheme == "http" {
		fmt.Fprintf(stdout, "docker pull %s\n", pull)
		if !*quiet {
			fmt.Fprintf(stdout, "podman pull --tls-verify=false %s\n", pull)
		}
	} else {
		fmt.Fprintf(stdout, "docker pull %s\n", pull)
	}
	return 0
}

// buildLocally builds req in this process with the configuration serve
// would use (from the environment) and shows its events; it returns the
// final event and the host:port that serve would listen on.
func buildLocally(ctx context.Context, load func() (*config.Config, error), req *image.Request, show progressView, stderr io.Writer) (builder.Event, string, error) {
	cfg, err := load()
	if err != nil {
		return builder.Event{}, "", fmt.Errorf("configuration: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	p, err := wire(ctx, cfg, log)
	if err != nil {
		return builder.Event{}, "", err
	}
	host := cfg.Host
	if host == "" {
		host = "127.0.0.1"
	}
	host = net.JoinHostPort(host, strconv.Itoa(cfg.Port))
	events, err := p.builder.Watch(ctx, req)
	if err != nil {
		return builder.Event{}, host, err
	}
	for e := range events {
		show.event(e)
		if e.Final() {
			// The process ends here: let the closure reach the Nix
			// binary cache first (NIXERY_NIX_CACHE), or its GC roots
			// would stay behind.
			if err := p.builder.Nix.WaitPushes(ctx); err != nil {
				log.Warn("not waiting for the push to the Nix binary cache", "err", err)
			}
			return e, host, nil
		}
	}
	return builder.Event{}, host, ctx.Err()
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// followBuild reads the server-sent events at url until the final one,
// passing each to show.
func followBuild(ctx context.Context, url string, show progressView) (builder.Event, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return builder.Event{}, err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return builder.Event{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		var e struct{ Error string }
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return builder.Event{}, errors.New(e.Error)
		}
		return builder.Event{}, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	events := readEvents(resp.Body)
	for {
		data, err := events()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("the server closed the event stream before the build ended")
			}
			return builder.Event{}, err
		}
		var e builder.Event
		if err := json.Unmarshal([]byte(data), &e); err != nil {
			return builder.Event{}, fmt.Errorf("bad event %q: %w", data, err)
		}
		show.event(e)
		if e.Final() {
			return e, nil
		}
	}
}

// readEvents returns a function that reads the next event's data from a
// text/event-stream (fields other than data, and comments, are skipped).
// https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
func readEvents(r io.Reader) func() (string, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	return func() (string, error) {
		var data []string
		for sc.Scan() {
			line := sc.Text()
			if line == "" {
				if len(data) > 0 {
					return strings.Join(data, "\n"), nil
				}
				continue
			}
			if v, ok := strings.CutPrefix(line, "data:"); ok {
				data = append(data, strings.TrimPrefix(v, " "))
			}
		}
		if err := sc.Err(); err != nil {
			return "", err
		}
		return "", io.EOF
	}
}

// progressView shows build events to a person.
type progressView interface {
	event(builder.Event)
	end()
}

type nopView struct{}

func (nopView) event(builder.Event) {}
func (nopView) end()                {}

// plainView prints one line per event, for logs (stdout not a terminal).
type plainView struct{ w io.Writer }

func (v *plainView) event(e builder.Event) {
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

func (v *plainView) end() {}

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

func (v *barView) event(e builder.Event) {
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

func (v *barView) end() {
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

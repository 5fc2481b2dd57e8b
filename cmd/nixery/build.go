package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/nixery/nixery/internal/buildclient"
	"github.com/nixery/nixery/internal/builder"
	"github.com/nixery/nixery/internal/config"
	"github.com/nixery/nixery/internal/image"
	"github.com/nixery/nixery/internal/redact"
	"github.com/nixery/nixery/internal/supplychain"
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
	ca := fs.String("ca", "", "a PEM bundle of the CAs that sign the server's certificate, for an https:// server with a certificate of its own CA (else the system's CAs, or those of the file SSL_CERT_FILE names)")
	cert := fs.String("cert", "", "a client certificate (PEM) to present, for a server with NIXERY_TLS_CLIENT_CA; with --key")
	key := fs.String("key", "", "the private key (PEM) of --cert")
	load := config.Settings(fs, os.Getenv)
	fs.Usage = func() {
		fmt.Fprintf(stderr, `Usage: nixery build [--server URL [--ca FILE] [--cert FILE --key FILE] | --local] [--quiet] <image>[:tag]

Asks a running Nixery to build an image (or waits for the build in flight),
shows its progress, and prints the pull command. Exits non-zero if the
build fails.

Example:
  nixery build --server http://registry.example:8080 shell/git
  nixery build --server https://alice:PASSWORD@registry.example --ca ca.crt shell/git

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
		fmt.Fprintf(stderr, "nixery build: --server must be an http(s) URL such as %s, not %q\n", defaultServer, redact.URLs(*server))
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	show := buildclient.NewView(stdout, *quiet)
	var final builder.Event
	var signs func() bool // whether the server signs its images
	if *local {
		var p *parts
		final, base, p, err = buildLocally(ctx, load, req, show, stderr)
		signs = func() bool { return p != nil && p.artifacts.PublicKey() != nil }
	} else {
		client, cerr := buildclient.Client(*ca, *cert, *key)
		if cerr != nil {
			fmt.Fprintf(stderr, "nixery build: %v\n", cerr)
			return 2
		}
		final, err = buildclient.Follow(ctx, client, base.String()+web.EventsPath(req.Ref()), show)
		signs = func() bool { return buildclient.Signs(ctx, client, base.String()) }
	}
	show.End()
	if err != nil {
		fmt.Fprintf(stderr, "nixery build: %s: %v\n", req.Ref(), err)
		return 1
	}
	if final.Kind == "error" {
		fmt.Fprintf(stderr, "nixery build: %s failed:\n%s\n", req.Ref(), final.Message)
		for _, s := range final.Suggestions {
			if s.Image != "" {
				fmt.Fprintf(stderr, "did you mean: nixery build %s\n", s.Image)
			}
		}
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
	if !*quiet && signs() {
		// The key's URL without the credentials of --server.
		key := url.URL{Scheme: base.Scheme, Host: base.Host, Path: "/cosign.pub"}
		fmt.Fprintf(stdout, "%s\n", supplychain.VerifyCommand(pull, key.String(), base.Scheme == "http"))
	}
	return 0
}

// buildLocally builds req in this process with the configuration serve
// would use (from the environment) and shows its events; it returns the
// final event, the URL that serve would answer on and the parts it wired.
func buildLocally(ctx context.Context, load func() (*config.Config, error), req *image.Request, show buildclient.View, stderr io.Writer) (builder.Event, *url.URL, *parts, error) {
	cfg, err := load()
	if err != nil {
		return builder.Event{}, nil, nil, fmt.Errorf("configuration: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	p, err := wire(ctx, cfg, log)
	if err != nil {
		return builder.Event{}, nil, nil, err
	}
	host := cfg.Host
	if host == "" {
		host = "127.0.0.1"
	}
	host = net.JoinHostPort(host, strconv.Itoa(cfg.Port))
	scheme := "http"
	if cfg.TLSCert != "" {
		scheme = "https"
	}
	base := &url.URL{Scheme: scheme, Host: host}
	events, err := p.builder.Watch(ctx, req)
	if err != nil {
		return builder.Event{}, base, p, err
	}
	for e := range events {
		show.Event(e)
		if e.Final() {
			// The process ends here: let the closure reach the Nix
			// binary cache first (NIXERY_NIX_CACHE), or its GC roots
			// would stay behind.
			if err := p.builder.Nix.WaitPushes(ctx); err != nil {
				log.Warn("not waiting for the push to the Nix binary cache", "err", err)
			}
			return e, base, p, nil
		}
	}
	return builder.Event{}, base, p, ctx.Err()
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

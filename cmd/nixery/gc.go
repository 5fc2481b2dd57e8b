package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nixery/nixery/internal/config"
	"github.com/nixery/nixery/internal/gc"
	"github.com/nixery/nixery/internal/metadata"
)

// defaultGCAge keeps images used within the last 30 days.
const defaultGCAge = 30 * 24 * time.Hour

const minGCAge = config.MinGCAge

// gcCmd is `nixery gc [--max-age D] [--dry-run] [storage flags]`: it
// deletes blobs and cache entries that no image used within the age
// references, in whichever backend the configuration names.
func gcCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("nixery gc", flag.ContinueOnError)
	fs.SetOutput(stderr)
	maxAge := fs.Duration("max-age", defaultGCAge, fmt.Sprintf("delete images nobody built or pulled within this age (at least %s: pulls record their use hourly)", minGCAge))
	dryRun := fs.Bool("dry-run", false, "write nothing at all; report what would be deleted")
	load := config.Settings(fs, os.Getenv)
	fs.Usage = func() {
		fmt.Fprintf(stdout, `Usage: nixery gc [--max-age DURATION] [--dry-run] [flags of serve]

Deletes the images (manifest cache entries) that nobody built or pulled, by
name or by digest, within --max-age (default %s), then every blob and
object that no remaining image, no build in progress and no upload younger
than an hour refers to. Safe while servers and replicas serve and build on
the same storage, and while another gc runs; see docs/storage.md.
It waits a few minutes between deleting images and deleting their blobs,
so that running servers drop those images from memory first.
With --dry-run nothing at all is written and the report says what would be
deleted. Storage is configured as for serve, by the same flags and
environment variables:

`, defaultGCAge)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "nixery gc: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *maxAge < minGCAge {
		fmt.Fprintf(stderr, "nixery gc: --max-age must be at least %s: pulls record their use hourly\n", minGCAge)
		return 2
	}
	cfg, err := load()
	if err != nil {
		fmt.Fprintf(stderr, "nixery gc: configuration: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	store, err := openStorage(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "nixery gc: %v\n", err)
		return 1
	}
	rep, err := gc.Collect(ctx, metadata.New(store, nil), gc.Options{MaxAge: *maxAge, DryRun: *dryRun})
	if err != nil {
		fmt.Fprintf(stderr, "nixery gc: %s: %v\n", store, err)
		return 1
	}
	what := "deleted"
	if *dryRun {
		what = "would delete (dry run)"
	}
	fmt.Fprintf(stdout, "%s, images unused for %s: %s\n", store, *maxAge, what)
	fmt.Fprintln(stdout, rep)
	return 0
}

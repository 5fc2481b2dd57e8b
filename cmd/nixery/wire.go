package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"runtime/debug"
	"strings"

	"github.com/nixery/nixery/internal/archive"
	"github.com/nixery/nixery/internal/attest"
	"github.com/nixery/nixery/internal/builder"
	"github.com/nixery/nixery/internal/config"
	"github.com/nixery/nixery/internal/demo"
	"github.com/nixery/nixery/internal/metadata"
	"github.com/nixery/nixery/internal/nix"
	"github.com/nixery/nixery/internal/sign"
	"github.com/nixery/nixery/internal/source"
	"github.com/nixery/nixery/internal/sourcehealth"
	"github.com/nixery/nixery/internal/storage"
	"github.com/nixery/nixery/internal/supplychain"
)

// openStorage opens the configured storage backend. Bucket backends
// contact nothing yet: an unreachable bucket gives 503s until it is back.
func openStorage(ctx context.Context, cfg *config.Config) (storage.Backend, error) {
	switch cfg.Backend {
	case "gcs":
		return storage.NewGCS(ctx, cfg.GCS)
	case "s3":
		return storage.NewS3(ctx, cfg.S3)
	}
	return storage.NewFilesystem(cfg.StoragePath)
}

// parts are the wired pieces that serve and `build --local` share.
type parts struct {
	source     source.Source
	store      storage.Backend
	builder    *builder.Builder
	nixVersion string
	// sourceHealth refuses new builds of a package set this Nix cannot
	// evaluate once serve runs it; it checks nothing until then.
	sourceHealth *sourcehealth.Watcher
	// artifacts makes and finds every image's SBOMs, provenance and
	// signatures.
	artifacts *supplychain.Maker
}

// wire checks Nix, prepares the package source (the built-in demo set
// when none is configured), opens storage and makes the builder.
func wire(ctx context.Context, cfg *config.Config, log *slog.Logger) (*parts, error) {
	nixVersion, err := nix.Version(ctx)
	if err != nil {
		return nil, fmt.Errorf("nix is not usable: %w (install Nix, e.g. Debian's nix-bin)", err)
	}
	src := cfg.Source
	offline := false
	if src == nil {
		busybox, err := demo.FindBusybox()
		if err != nil {
			return nil, fmt.Errorf("no package source configured and the built-in demo set cannot be prepared: %w; or set NIXERY_CHANNEL, NIXERY_PKGS_REPO, NIXERY_PKGS_FLAKE or NIXERY_PKGS_PATH", err)
		}
		if err := demo.Extract(cfg.DemoPath, busybox); err != nil {
			return nil, fmt.Errorf("preparing the built-in demo package set in %s: %w", cfg.DemoPath, err)
		}
		src = source.PathSource{Path: cfg.DemoPath, Label: "built-in demo package set (offline)"}
		offline = true // no binary cache has the demo packages
		log.Warn("no package source configured: serving the built-in demo package set; set NIXERY_CHANNEL, NIXERY_PKGS_REPO, NIXERY_PKGS_FLAKE or NIXERY_PKGS_PATH for real packages")
	}
	store, err := openStorage(ctx, cfg)
	if err != nil {
		return nil, err
	}
	popularity, popularityID, err := loadPopularity(ctx, cfg.Popularity)
	if err != nil {
		return nil, err
	}
	format := archive.Gzip
	if cfg.LayerFormat == "zstd" {
		format = archive.Zstd
	}
	runner := &nix.Runner{Timeout: cfg.NixTimeout, Logger: log, Offline: offline, MinFree: cfg.NixMinFree, MaxFree: cfg.NixMaxFree,
		Cache: cfg.NixCache, Options: cfg.NixOptions}
	if cfg.NixCache.URL != "" {
		log.Info("nix binary cache: substituting from it, pushing every build's closure to it", "cache", cfg.NixCache.String())
	}
	builder := &builder.Builder{
		Format:       format,
		Compression:  cfg.Compression,
		Popularity:   popularity,
		PopularityID: popularityID,
		Source:       src,
		Nix:          runner,
		Storage:      store,
		LayerBudget:  cfg.LayerBudget,
		CacheTTL:     cfg.CacheTTL,
		MaxBuilds:    cfg.MaxBuilds,
		QueueSize:    cfg.BuildQueue,
		ClaimTTL:     cfg.LeaseTTL,
		Logger:       log,
	}
	sourceHealth := &sourcehealth.Watcher{Source: src, Nix: runner, NixVersion: nixVersion,
		Interval: cfg.SourceCheck, Recheck: cfg.CacheTTL, Logger: log}
	builder.Usable = sourceHealth.Usable
	builder.HoldPack = holdPack(os.Getenv("NIXERY_TEST_HOLD_PACK"))
	artifacts := &supplychain.Maker{Metadata: builder.Metadata(), Instance: attest.Builder{ID: instanceURL(cfg), Version: version},
		Repository: repository(cfg)}
	if cfg.SigningKey != "" {
		signer, err := sign.Load(cfg.SigningKey, cfg.SigningPasswordFile)
		if err != nil {
			return nil, fmt.Errorf("NIXERY_SIGNING_KEY / --signing-key: %w", err)
		}
		artifacts.Signer = signer
		// The key's scrypt took tens of MB, once: give them back to the
		// system now rather than keep them resident for the process's
		// life.
		debug.FreeOSMemory()
		log.Info("signing every image and its SBOMs and provenance", "key", signer.Fingerprint())
	}
	builder.Artifacts = artifacts
	return &parts{source: src, store: store, builder: builder, nixVersion: nixVersion, sourceHealth: sourceHealth, artifacts: artifacts}, nil
}

// repository is the repository that an image's signatures name: under
// NIXERY_PUBLIC_URL's host where it is set, else the image name alone
// (cosign checks the digest, not the name).
func repository(cfg *config.Config) func(d *metadata.Details) string {
	host := ""
	if u, err := url.Parse(cfg.PublicURL); err == nil && cfg.PublicURL != "" {
		host = u.Host + strings.TrimSuffix(u.Path, "/")
	}
	return func(d *metadata.Details) string {
		if host == "" {
			return d.Name
		}
		return host + "/" + d.Name
	}
}

// instanceURL names this instance as the builder of its images'
// provenance: NIXERY_PUBLIC_URL, else nixery://<host name>.
func instanceURL(cfg *config.Config) string {
	if cfg.PublicURL != "" {
		return cfg.PublicURL
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return "nixery://" + host
}

// holdPack is for the end-to-end tests only: with NIXERY_TEST_HOLD_PACK
// naming a FIFO, each build's pack waits once half of it is packed (after
// a progress event) until a test opens the FIFO for writing and closes it, so that a test
// sees a pack in progress without racing it (builder.Builder.HoldPack).
func holdPack(fifo string) func() {
	if fifo == "" {
		return nil
	}
	return func() {
		if f, err := os.Open(fifo); err == nil {
			io.Copy(io.Discard, f)
			f.Close()
		}
	}
}

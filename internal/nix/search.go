package nix

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"time"
)

// searchExpr lists the packages of a package set; see the comment at its
// top for what it lists and how it survives broken packages.
//
//go:embed search.nix
var searchExpr string

// DefaultSearchTimeout bounds one listing when the caller's context has no
// deadline. Listing nixpkgs evaluates every package's metadata, which
// takes far longer than resolving a few attributes (NIX_TIMEOUT is for
// builds, not for this).
const DefaultSearchTimeout = 10 * time.Minute

// Package is one package of a package set, for search.
type Package struct {
	Attr        string `json:"attr"` // attribute path, e.g. "xorg.xev"
	Version     string `json:"version,omitempty"`
	Description string `json:"description,omitempty"`
}

// SearchRequest says which package set to list; the fields mean what they
// mean in Request.
type SearchRequest struct {
	SrcType, SrcArgs string
	System           string
}

// Packages lists the packages of a package set with one Nix evaluation
// (nix-instantiate --eval --strict --json of search.nix), run like every
// other Nix process: in its own process group, stopped as a group when
// ctx ends. Packages whose evaluation fails are left out, and so are
// packages whose attribute path, version or description is not valid
// UTF-8 (which JSON cannot carry: Nix 2.19 and later fail to print it),
// which are logged by name.
func (r *Runner) Packages(ctx context.Context, req SearchRequest) ([]Package, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultSearchTimeout)
		defer cancel()
	}
	var out bytes.Buffer
	stderr := &lineWriter{listing: true}
	err := r.runWith(ctx, &out, stderr, "nix-instantiate", append([]string{"--eval", "--strict", "--json",
		"--expr", searchExpr}, r.nixArgs(req.SrcType, req.SrcArgs, req.System)...)...)
	if err != nil {
		return nil, err
	}
	if n := stderr.unprintableCount; n > 0 {
		r.logger().Warn("nix: packages left out of the listing: not valid UTF-8",
			"count", n, "packages", stderr.unprintable)
	}
	return parsePackages(out.Bytes())
}

// parsePackages decodes search.nix's list of [attr, version, description].
func parsePackages(data []byte) ([]Package, error) {
	var rows [][3]string
	if err := json.Unmarshal(data, &rows); err != nil {
		return nil, fmt.Errorf("package list: %w", err)
	}
	pkgs := make([]Package, len(rows))
	for i, r := range rows {
		pkgs[i] = Package{Attr: r[0], Version: r[1], Description: r[2]}
	}
	return pkgs, nil
}

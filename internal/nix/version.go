package nix

import (
	"bytes"
	"context"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Version returns the version of Nix, as `nix-build --version` says it,
// e.g. "nix-build (Nix) 2.8.0".
func Version(ctx context.Context) (string, error) {
	r := &Runner{Timeout: 30 * time.Second}
	ctx, cancel := context.WithTimeout(ctx, r.Timeout)
	defer cancel()
	var out bytes.Buffer
	if err := r.run(ctx, &out, nil, "nix-build", "--version"); err != nil {
		return "", err
	}
	return strings.TrimSpace(out.String()), nil
}

// Describe names the Nix that a command's --version output is from, as
// messages to operators name it: "Nix 2.8.0", "Lix 2.91.1"; "Nix" when
// the output says nothing recognisable.
func Describe(version string) string {
	m := nixVersionRE.FindStringSubmatch(strings.TrimSpace(version))
	if m == nil {
		return "Nix"
	}
	name := "Nix"
	if strings.Contains(m[1], "Lix") {
		name = "Lix"
	}
	return name + " " + m[2]
}

// nixVersion is what `nix --version` says of the Nix that runs, as far
// as Nixery needs to know it.
type nixVersion struct {
	Major, Minor int
	// Lix is the Lix fork ("nix (Lix, like Nix) 2.91.1"): its versions
	// continue from Nix 2.18's, and it keeps Nix 2.18's path-info shape
	// without `--json-format` (which it rejects), whatever its number.
	Lix bool
	// Known says the version was read; an unknown Nix gets no options
	// that a version introduced.
	Known bool
}

// nixVersionRE reads what a Nix command's --version says: "nix (Nix)
// 2.34.8", "nix-build (Lix, like Nix) 2.91.1", "nix (Nix) 2.33pre".
var nixVersionRE = regexp.MustCompile(`(?m)^[a-z-]+ \(([^)]*)\) ((\d+)\.(\d+)\S*)`)

// parseNixVersion reads the output of `nix --version`.
func parseNixVersion(s string) nixVersion {
	m := nixVersionRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return nixVersion{}
	}
	major, err1 := strconv.Atoi(m[3])
	minor, err2 := strconv.Atoi(m[4])
	if err1 != nil || err2 != nil {
		return nixVersion{}
	}
	return nixVersion{Major: major, Minor: minor, Known: true, Lix: strings.Contains(m[1], "Lix")}
}

// atLeast says whether v is CppNix (not Lix) of at least major.minor.
func (v nixVersion) atLeast(major, minor int) bool {
	return v.Known && !v.Lix && (v.Major > major || v.Major == major && v.Minor >= minor)
}

// versionProbe remembers the version of the Nix that a Runner runs: it
// asks once, and again only if asking failed.
type versionProbe struct {
	mu      sync.Mutex
	version nixVersion
	done    bool
}

// versionTimeout bounds `nix --version`.
const versionTimeout = 30 * time.Second

// nixVersion is the version of the `nix` command, asked once per Runner:
// concurrent first callers wait for the one `nix --version`. A failure
// (logged) is not remembered: the caller goes on as with an unknown Nix,
// and the next caller asks again.
func (r *Runner) nixVersion(ctx context.Context) nixVersion {
	p := &r.version
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return p.version
	}
	ctx, cancel := context.WithTimeout(ctx, versionTimeout)
	defer cancel()
	var out bytes.Buffer
	if err := r.run(ctx, &out, nil, "nix", "--version"); err != nil {
		r.logger().Warn("nix: cannot tell the version of nix; assuming an old one", "err", err)
		return nixVersion{}
	}
	p.version, p.done = parseNixVersion(out.String()), true
	if !p.version.Known {
		r.logger().Warn("nix: unrecognised version; assuming an old one", "version", strings.TrimSpace(out.String()))
	}
	return p.version
}

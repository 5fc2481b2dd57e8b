package nix

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// defaultStoreDir is assumed when `nix path-info` names no store path in
// full.
const defaultStoreDir = "/nix/store"

// pathInfo is the part of `nix path-info --json` that Nixery reads.
type pathInfo struct {
	Path       string   `json:"path"`     // only in the array shape
	Valid      *bool    `json:"valid"`    // only in the array shape, false for invalid paths
	StoreDir   string   `json:"storeDir"` // only in newer object shapes
	NarSize    int64    `json:"narSize"`
	References []string `json:"references"`
}

// parsePathInfo reads the output of `nix path-info --json --recursive`,
// which comes in several shapes (testdata/pathinfo has each, as real Nix
// printed it):
//
//   - Nix up to 2.18 (Debian 12 has 2.8), and Lix: an array of objects,
//     each with its "path"; an invalid path is {"path":…,"valid":false}.
//   - Nix 2.19 and later, and `--json-format 1` (Nix 2.33 and later): an
//     object keyed by store path; an invalid path has the value null.
//     Since 2.33 each entry also says "storeDir" and "version":1.
//   - `--json-format 2` (Nix 2.33 and later), which Nixery asks for where
//     Nix has it: {"info":{…},"storeDir":…,"version":2}, the object
//     keyed by base name ("<hash>-<name>", no store directory), the
//     references by base name too.
//
// It returns the store paths sorted by path, each with its references
// sorted, in full and without itself.
func parsePathInfo(data []byte) ([]StorePath, error) {
	data = bytes.TrimSpace(data)
	var infos []pathInfo
	var storeDir string
	switch {
	case bytes.HasPrefix(data, []byte("[")):
		if err := json.Unmarshal(data, &infos); err != nil {
			return nil, err
		}
		for _, in := range infos {
			if in.Valid != nil && !*in.Valid {
				return nil, fmt.Errorf("store path %s is not valid", in.Path)
			}
		}
	case bytes.HasPrefix(data, []byte("{")):
		var byPath map[string]json.RawMessage
		if err := json.Unmarshal(data, &byPath); err != nil {
			return nil, err
		}
		// "info" cannot be a store path: those are named "<hash>-<name>".
		if wrapped, ok := byPath["info"]; ok {
			if sd, ok := byPath["storeDir"]; ok {
				_ = json.Unmarshal(sd, &storeDir)
			}
			byPath = nil
			if err := json.Unmarshal(wrapped, &byPath); err != nil {
				return nil, fmt.Errorf("info: %w", err)
			}
		}
		for p, raw := range byPath {
			if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
				return nil, fmt.Errorf("store path %s is not valid", p)
			}
			var in pathInfo
			if err := json.Unmarshal(raw, &in); err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
			in.Path = p
			infos = append(infos, in)
		}
	default:
		return nil, errors.New("not a JSON array or object")
	}

	// The store directory, for names given without it.
	if storeDir == "" {
		for _, in := range infos {
			if strings.HasPrefix(in.Path, "/") {
				storeDir = path.Dir(in.Path)
				break
			}
		}
	}
	if storeDir == "" {
		storeDir = defaultStoreDir
	}
	full := func(p, dir string) string {
		if strings.HasPrefix(p, "/") {
			return p
		}
		if dir == "" {
			dir = storeDir
		}
		return path.Join(dir, p)
	}

	out := make([]StorePath, 0, len(infos))
	for _, in := range infos {
		if in.Path == "" {
			return nil, errors.New("entry without a store path")
		}
		sp := StorePath{Path: full(in.Path, in.StoreDir), NarSize: in.NarSize}
		for _, ref := range in.References {
			if ref = full(ref, in.StoreDir); ref != sp.Path {
				sp.References = append(sp.References, ref)
			}
		}
		slices.Sort(sp.References)
		sp.References = slices.Compact(sp.References)
		out = append(out, sp)
	}
	slices.SortFunc(out, func(a, b StorePath) int { return strings.Compare(a.Path, b.Path) })
	return out, nil
}

// pathInfoFormat is the `--json-format` that Nixery asks `nix path-info`
// for, where Nix has the option: the wrapped shape of base names, which
// parsePathInfo reads. Nix 2.33 introduced the option and warns that
// `--json` without it "will become an error in a future release".
const pathInfoFormat = "2"

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

// nixVersionRE finds the version number at the end of `nix --version`:
// "nix (Nix) 2.34.8", "nix (Lix, like Nix) 2.91.1", "nix (Nix) 2.33pre".
var nixVersionRE = regexp.MustCompile(`(?m)^nix \(([^)]*)\) (\d+)\.(\d+)`)

// parseNixVersion reads the output of `nix --version`.
func parseNixVersion(s string) nixVersion {
	m := nixVersionRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return nixVersion{}
	}
	major, err1 := strconv.Atoi(m[2])
	minor, err2 := strconv.Atoi(m[3])
	if err1 != nil || err2 != nil {
		return nixVersion{}
	}
	return nixVersion{Major: major, Minor: minor, Known: true, Lix: strings.Contains(m[1], "Lix")}
}

// atLeast says whether v is CppNix (not Lix) of at least major.minor.
func (v nixVersion) atLeast(major, minor int) bool {
	return v.Known && !v.Lix && (v.Major > major || v.Major == major && v.Minor >= minor)
}

// pathInfoArgs are the options of `nix path-info` for its JSON output.
func (v nixVersion) pathInfoArgs() []string {
	if v.atLeast(2, 33) {
		return []string{"--json", "--json-format", pathInfoFormat}
	}
	return []string{"--json"}
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

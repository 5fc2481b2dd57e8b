package nix

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
)

// defaultStoreDir is assumed when `nix path-info` names no store path in
// full.
const defaultStoreDir = "/nix/store"

// pathInfo is the part of `nix path-info --json` that Nixery reads.
type pathInfo struct {
	Path       string          `json:"path"`     // only in the array shape
	Valid      *bool           `json:"valid"`    // only in the array shape, false for invalid paths
	StoreDir   string          `json:"storeDir"` // only in newer object shapes
	NarSize    int64           `json:"narSize"`
	NarHash    json.RawMessage `json:"narHash"` // see narHash
	References []string        `json:"references"`
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
		sp := StorePath{Path: full(in.Path, in.StoreDir), NarSize: in.NarSize, NarHash: narHash(in.NarHash)}
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

// pathInfoArgs are the options of `nix path-info` for its JSON output.
func (v nixVersion) pathInfoArgs() []string {
	if v.atLeast(2, 33) {
		return []string{"--json", "--json-format", pathInfoFormat}
	}
	return []string{"--json"}
}

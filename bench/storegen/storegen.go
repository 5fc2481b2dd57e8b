// Package storegen writes a generated, Nix-store-shaped closure to disk for
// the packing benchmarks (bench/packing, bench/coldpack): store paths of
// many files whose content mimics a Nix store — text (scripts, headers,
// docs), binary-like data (repetitive structures with some entropy) and
// incompressible data (compressed archives, images) in proportions of
// about 35/45/20 % — with heavy-tailed file sizes and a reference graph
// shaped like nixpkgs' (one base every path uses, a few shared libraries,
// the rest referring to a handful of earlier paths).
//
// The output depends only on the arguments (fixed seeds), so every run of
// a benchmark packs the same bytes.
package storegen

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
)

// Path is one generated store path.
type Path struct {
	Dir  string   // absolute, <store>/<hash>-<name>
	Size int64    // bytes of file data under it (its NAR size, nearly)
	Refs []string // Dirs of the store paths it refers to
}

// Generate writes store paths under store until total bytes of file data
// are written, and returns them in creation order with the bytes written.
func Generate(store string, total int64) ([]Path, int64, error) {
	r := rand.New(rand.NewPCG(42, 4242))
	// The graph has its own stream, so that the files are the same as
	// before references were added.
	g := rand.New(rand.NewPCG(7, 77))
	var paths []Path
	var written int64
	for i := 0; written < total; i++ {
		sp := Path{Dir: filepath.Join(store, fmt.Sprintf("%032d-pkg%04d-1.%d", i, i, r.IntN(10)))}
		nfiles := 1 + r.IntN(60)
		for f := 0; f < nfiles && written < total; f++ {
			kind := r.IntN(100)
			size := int(min(64<<20, max(200, int64(20e3*expish(r)))))
			var data []byte
			var file string
			switch {
			case kind < 35:
				data, file = text(r, words, size), fmt.Sprintf("share/doc/f%d.txt", f)
			case kind < 80:
				data, file = binaryLike(r, size), fmt.Sprintf("lib/lib%d.so", f)
			default:
				data, file = random(r, size), fmt.Sprintf("share/data/f%d.gz", f)
			}
			full := filepath.Join(sp.Dir, file)
			if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
				return nil, 0, err
			}
			if err := os.WriteFile(full, data, 0o444); err != nil {
				return nil, 0, err
			}
			written += int64(len(data))
			sp.Size += int64(len(data))
		}
		// References: the first path is the base (glibc) everything uses;
		// paths 1–9 are shared libraries that a third of the others use;
		// and each path refers to up to three random earlier ones.
		refs := map[string]bool{}
		if i > 0 {
			refs[paths[0].Dir] = true
		}
		for j := 1; j < min(i, 10); j++ {
			if g.IntN(3) == 0 {
				refs[paths[j].Dir] = true
			}
		}
		for range g.IntN(4) {
			if i > 1 {
				refs[paths[g.IntN(i)].Dir] = true
			}
		}
		for d := range refs {
			sp.Refs = append(sp.Refs, d)
		}
		paths = append(paths, sp)
	}
	return paths, written, nil
}

// words are the vocabulary of text files.
var words = strings.Fields(`the of and to in is for on that with as by this from are be at or an it
	include define return struct static const void int char unsigned if else while
	export PATH bin lib share usr nix store glibc python3 import def class self None
	function local echo then fi done case esac license copyright GNU General Public`)

// FileSize draws the size of one file as Generate does: heavy-tailed,
// 200 bytes to 64 MiB, about 60 KB on average.
func FileSize(r *rand.Rand) int64 {
	return min(64<<20, max(200, int64(20e3*expish(r))))
}

// Content returns size bytes of one file's content of a kind drawn as
// Generate draws it (35 % text, 45 % binary-like, 20 % incompressible),
// and the file's path relative to its store path, made unique by f (the
// file's number in its store path) as Generate names it. bench/workload
// fills the store paths of its Nix package set with it.
func Content(r *rand.Rand, size, f int) (data []byte, file string) {
	switch kind := r.IntN(100); {
	case kind < 35:
		return text(r, words, size), fmt.Sprintf("share/doc/f%d.txt", f)
	case kind < 80:
		return binaryLike(r, size), fmt.Sprintf("lib/lib%d.so", f)
	default:
		return random(r, size), fmt.Sprintf("share/data/f%d.gz", f)
	}
}

// expish draws from a heavy-tailed distribution with mean of about 3.
func expish(r *rand.Rand) float64 {
	x := r.ExpFloat64()
	return x * x * x
}

func text(r *rand.Rand, words []string, size int) []byte {
	var b strings.Builder
	for b.Len() < size {
		b.WriteString(words[r.IntN(len(words))])
		if r.IntN(12) == 0 {
			b.WriteByte('\n')
		} else {
			b.WriteByte(' ')
		}
	}
	return []byte(b.String()[:size])
}

// binaryLike mimics machine code and tables: short runs of recurring
// instruction-like patterns with random operands.
func binaryLike(r *rand.Rand, size int) []byte {
	patterns := make([][]byte, 64)
	for i := range patterns {
		patterns[i] = make([]byte, 2+r.IntN(6))
		for j := range patterns[i] {
			patterns[i][j] = byte(r.Uint32())
		}
	}
	out := make([]byte, 0, size+16)
	for len(out) < size {
		out = append(out, patterns[r.IntN(len(patterns))]...)
		if r.IntN(3) == 0 {
			out = append(out, byte(r.Uint32()), byte(r.Uint32()))
		}
		if r.IntN(20) == 0 {
			out = append(out, make([]byte, r.IntN(32))...)
		}
	}
	return out[:size]
}

func random(r *rand.Rand, size int) []byte {
	out := make([]byte, size)
	for i := 0; i+8 <= size; i += 8 {
		v := r.Uint64()
		for k := range 8 {
			out[i+k] = byte(v >> (8 * k))
		}
	}
	return out
}

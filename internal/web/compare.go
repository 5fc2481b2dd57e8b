package web

import (
	"cmp"
	"slices"

	"github.com/opencontainers/go-digest"

	"github.com/nixery/nixery/internal/builder"
)

// Comparison is what two built images share and what each has alone
// (the image page with ?compare=<other name>): layers by digest, with
// their compressed sizes (what a client that holds one image downloads
// for the other), and store paths, with their NAR sizes (what is the same
// once unpacked, even where the layering differs).
type Comparison struct {
	A, B   string // the image names, as asked for
	Layers struct {
		Shared, OnlyA, OnlyB             Count
		SharedList, OnlyAList, OnlyBList []builder.LayerInfo
	}
	Paths struct {
		Shared, OnlyA, OnlyB Count
		// OnlyAList and OnlyBList are the biggest paths each has alone
		// (at most maxCompared).
		OnlyAList, OnlyBList []builder.PathInfo
	}
}

// Count is a number of things and their bytes.
type Count struct {
	N     int
	Bytes int64
}

func (c *Count) add(bytes int64) { c.N++; c.Bytes += bytes }

// maxCompared bounds the paths listed of each side.
const maxCompared = 20

// compare computes what a and b share.
func compare(a, b *builder.Details) *Comparison {
	c := &Comparison{A: a.Name, B: b.Name}
	inB := map[digest.Digest]bool{}
	for _, l := range b.Layers {
		inB[l.Digest] = true
	}
	inA := map[digest.Digest]bool{}
	for _, l := range a.Layers {
		if inA[l.Digest] {
			continue // a layer twice (two empty ones) counts once
		}
		inA[l.Digest] = true
		if inB[l.Digest] {
			c.Layers.Shared.add(l.Size)
			c.Layers.SharedList = append(c.Layers.SharedList, l)
		} else {
			c.Layers.OnlyA.add(l.Size)
			c.Layers.OnlyAList = append(c.Layers.OnlyAList, l)
		}
	}
	seen := map[digest.Digest]bool{}
	for _, l := range b.Layers {
		if !inA[l.Digest] && !seen[l.Digest] {
			seen[l.Digest] = true
			c.Layers.OnlyB.add(l.Size)
			c.Layers.OnlyBList = append(c.Layers.OnlyBList, l)
		}
	}
	pathsB := map[string]bool{}
	for _, p := range b.Closure {
		pathsB[p.Path] = true
	}
	pathsA := map[string]bool{}
	for _, p := range a.Closure {
		pathsA[p.Path] = true
		if pathsB[p.Path] {
			c.Paths.Shared.add(p.Size)
		} else {
			c.Paths.OnlyA.add(p.Size)
			c.Paths.OnlyAList = append(c.Paths.OnlyAList, p)
		}
	}
	for _, p := range b.Closure {
		if !pathsA[p.Path] {
			c.Paths.OnlyB.add(p.Size)
			c.Paths.OnlyBList = append(c.Paths.OnlyBList, p)
		}
	}
	c.Paths.OnlyAList, c.Paths.OnlyBList = biggest(c.Paths.OnlyAList), biggest(c.Paths.OnlyBList)
	return c
}

// biggest is the maxCompared biggest of paths, biggest first.
func biggest(paths []builder.PathInfo) []builder.PathInfo {
	slices.SortStableFunc(paths, func(a, b builder.PathInfo) int { return cmp.Compare(b.Size, a.Size) })
	return paths[:min(len(paths), maxCompared)]
}

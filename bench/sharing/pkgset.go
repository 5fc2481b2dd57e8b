package main

import "github.com/nixery/nixery/bench/pkgset"

// storePath is one path of the generated package set (bench/pkgset), in
// the form this command's algorithms use.
type storePath struct {
	name string // without hash, e.g. "glibc-2.40-66"
	path string // /nix/store/<hash>-name
	size int64  // NAR bytes
	refs []string
}

// pkgSet is bench/pkgset's generated set, indexed for this command.
type pkgSet struct {
	set   *pkgset.Set
	paths map[string]*storePath // by name
	attrs map[string]string     // attribute → name of its store path
}

// workload is the sequence of images pulled, by name as in a pull URL.
var workload = pkgset.Workload

// attrs returns the attributes of an image name, meta-packages expanded.
func attrs(image string) []string { return pkgset.Packages(image) }

func generate(seed uint64) *pkgSet {
	set := pkgset.Generate(seed)
	s := &pkgSet{set: set, paths: map[string]*storePath{}, attrs: set.Attrs}
	for name, p := range set.Paths {
		s.paths[name] = &storePath{name: p.Name, path: p.Path, size: p.Size, refs: p.Refs}
	}
	return s
}

func (s *pkgSet) closure(attrs []string) ([]*storePath, error) {
	c, err := s.set.Closure(attrs)
	if err != nil {
		return nil, err
	}
	out := make([]*storePath, len(c))
	for i, p := range c {
		out[i] = s.paths[p.Name]
	}
	return out, nil
}

func (s *pkgSet) popularity() map[string]int { return s.set.Popularity() }

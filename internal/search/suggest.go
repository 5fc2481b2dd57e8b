package search

import (
	"cmp"
	"math/bits"
	"slices"
	"strings"
)

// Suggestions: "did you mean" for a name that is no package of the set,
// answered from the package list in memory (never by Nix, never waiting
// for the list). Close names, best first:
//
//	0 the same name ignoring case          Hello            → hello
//	1 the name with a leading underscore   1password-cli    → _1password-cli
//	2 a nested attribute's last component  requests         → python3Packages.requests
//	3 a few edits away, the whole path or  helo, pyhton3    → hello, python3
//	  a nested attribute's last component  requets          → python3Packages.requests
//
// An edit inserts, deletes or changes a character or swaps two adjacent
// ones (optimal string alignment distance), and names are a few edits
// away at most in proportion to their length (maxEdits), so that a name
// close to nothing gets no suggestion rather than noise. Ties go to the
// name that keeps more of what was typed (the longest common
// subsequence: helo → hello before help), then to the one nested less
// deeply, then to the shorter, then alphabetical order.
//
// The whole list is never compared: names are looked up by binary
// search in the list sorted by path and by last component; of the paths
// (or last components) whose length is within maxEdits of the name's,
// those that lack more than maxEdits of the name's characters, or have
// more than maxEdits it lacks (a test of two 64-bit sets of characters:
// each edit adds or removes at most one), are passed over, and the rest
// compared character by character, in a band around the diagonal. See
// BenchmarkSuggest for the time over 120,000 names.

// MaxSuggestions is how many close names a name gets at most.
const MaxSuggestions = 3

// Bounds of a suggestion, whoever asks: a name longer than
// maxSuggestName gets none (no image name has a component that long; a
// hostile one costs nothing), and a name of the list longer than
// maxSuggested is never suggested (a message stays short).
const (
	maxSuggestName = 128
	maxSuggested   = 128
)

// maxEdits is how many edits from a name of n bytes a suggestion may
// be: none below 4 bytes (every short name is one edit from many
// others), one up to 7, two up to 11, three beyond.
func maxEdits(n int) int { return min(n/4, 3) }

// suggester is what an index keeps for suggestions, made once per
// package list: four slices of indices into the index's attributes (four
// bytes per package each) and the character sets of the last two (eight
// bytes per package each).
type suggester struct {
	x       *index
	byPath  []int32 // every package, by lower-case path
	byLast  []int32 // the nested ones (a dot in the path), by lower-case last component
	lenPath []int32 // every package, by the length of its path (then as byPath)
	lenLast []int32 // the nested ones, by the length of their last component
	// pathAt[n] and lastAt[n] are where the paths (last components) of
	// n bytes begin in lenPath (lenLast); n up to maxSuggested+1.
	pathAt, lastAt []int32
	// pathChars[j] is chars(path of lenPath[j]); lastChars likewise.
	pathChars, lastChars []uint64
}

func newSuggester(x *index) *suggester {
	s := &suggester{x: x}
	for i, a := range x.attrs {
		if len(a) > maxSuggested {
			continue
		}
		s.byPath = append(s.byPath, int32(i))
		if len(x.lasts[i]) < len(a) {
			s.byLast = append(s.byLast, int32(i))
		}
	}
	slices.SortFunc(s.byPath, func(a, b int32) int { return strings.Compare(x.attrs[a], x.attrs[b]) })
	slices.SortFunc(s.byLast, func(a, b int32) int { return strings.Compare(x.lasts[a], x.lasts[b]) })
	s.lenPath, s.pathAt = byLength(s.byPath, x.attrs)
	s.lenLast, s.lastAt = byLength(s.byLast, x.lasts)
	s.pathChars, s.lastChars = charSets(s.lenPath, x.attrs), charSets(s.lenLast, x.lasts)
	return s
}

// chars is the set of characters of s as 64 bits: one bit for each
// letter, digit, '-', '_' and '.', the other bytes sharing the rest. An
// edit adds at most one character to a name's set and removes at most
// one, so two names d edits apart each have at most d bits the other
// lacks (bits shared by several bytes only lower the count).
func chars(s string) uint64 {
	var m uint64
	for i := 0; i < len(s); i++ {
		var bit uint
		switch c := s[i]; {
		case 'a' <= c && c <= 'z':
			bit = uint(c - 'a')
		case '0' <= c && c <= '9':
			bit = 26 + uint(c-'0')
		case c == '-':
			bit = 36
		case c == '_':
			bit = 37
		case c == '.':
			bit = 38
		default:
			bit = 39 + uint(c)%25
		}
		m |= 1 << bit
	}
	return m
}

func charSets(ids []int32, keys []string) []uint64 {
	out := make([]uint64, len(ids))
	for j, i := range ids {
		out[j] = chars(keys[i])
	}
	return out
}

// byLength sorts ids by the length of their key, stably (a counting
// sort), and returns where each length begins.
func byLength(ids []int32, keys []string) (sorted, at []int32) {
	at = make([]int32, maxSuggested+2)
	for _, i := range ids {
		at[len(keys[i])+1]++
	}
	for n := 1; n < len(at); n++ {
		at[n] += at[n-1]
	}
	sorted = make([]int32, len(ids))
	next := slices.Clone(at)
	for _, i := range ids {
		n := len(keys[i])
		sorted[next[n]] = i
		next[n]++
	}
	return sorted, at
}

// equal returns the ids in sorted (by keys) whose key is k.
func equal(sorted []int32, keys []string, k string) []int32 {
	lo, _ := slices.BinarySearchFunc(sorted, k, func(i int32, k string) int { return strings.Compare(keys[i], k) })
	hi := lo
	for hi < len(sorted) && keys[sorted[hi]] == k {
		hi++
	}
	return sorted[lo:hi]
}

// candidate is a close name: how close (rank, then edits and the kept
// characters for rank 3), and the package.
type candidate struct {
	rank, edits, kept int
	i                 int32
}

// suggest returns up to MaxSuggestions close names for name, as an image
// name spells them (lower case), best first.
func (s *suggester) suggest(name string) []string {
	if name == "" || len(name) > maxSuggestName {
		return nil
	}
	x := s.x
	q := strings.ToLower(name)
	var found []candidate
	seen := map[int32]bool{}
	add := func(c candidate) {
		if !seen[c.i] {
			seen[c.i] = true
			found = append(found, c)
		}
	}
	for _, i := range equal(s.byPath, x.attrs, q) {
		add(candidate{rank: 0, i: i})
	}
	if !strings.HasPrefix(q, "_") {
		for _, i := range equal(s.byPath, x.attrs, "_"+q) {
			add(candidate{rank: 1, i: i})
		}
	}
	for _, i := range equal(s.byLast, x.lasts, q) {
		add(candidate{rank: 2, i: i})
	}
	if k := maxEdits(len(q)); k > 0 {
		buf := make([]int, 3*(len(q)+k+1))
		qc := chars(q)
		near := func(sorted, at []int32, sets []uint64, keys []string) {
			lo, hi := at[max(len(q)-k, 0)], at[min(len(q)+k, maxSuggested)+1]
			for j, c := range sets[lo:hi] {
				if bits.OnesCount64(qc&^c) > k || bits.OnesCount64(c&^qc) > k {
					continue
				}
				i := sorted[lo+int32(j)]
				if d := osa(q, keys[i], k, buf); d <= k && !seen[i] {
					add(candidate{rank: 3, edits: d, kept: lcs(q, keys[i], buf), i: i})
				}
			}
		}
		near(s.lenPath, s.pathAt, s.pathChars, x.attrs)
		near(s.lenLast, s.lastAt, s.lastChars, x.lasts)
	}
	slices.SortFunc(found, func(a, b candidate) int {
		return cmp.Or(cmp.Compare(a.rank, b.rank), cmp.Compare(a.edits, b.edits), cmp.Compare(b.kept, a.kept),
			cmp.Compare(strings.Count(x.attrs[a.i], "."), strings.Count(x.attrs[b.i], ".")),
			cmp.Compare(len(x.attrs[a.i]), len(x.attrs[b.i])), strings.Compare(x.pkgs[a.i].Attr, x.pkgs[b.i].Attr))
	})
	var out []string
	for _, c := range found {
		a := x.attrs[c.i]
		// Not the name as typed (Nix found nothing there), each once,
		// and only a name that a lower-case image name selects.
		if a == name || slices.Contains(out, a) || !s.selects(a) {
			continue
		}
		if out = append(out, a); len(out) == MaxSuggestions {
			break
		}
	}
	return out
}

// selects reports whether the lower-case path a, as an image name
// component, selects one package: one spelled so, or the only one that
// is a ignoring case (package nix finds attributes ignoring case, and
// says "ambiguous" when several match).
func (s *suggester) selects(a string) bool {
	same := equal(s.byPath, s.x.attrs, a)
	if len(same) == 1 {
		return true
	}
	return slices.ContainsFunc(same, func(i int32) bool { return s.x.pkgs[i].Attr == a })
}

// osa is the optimal string alignment distance of a and b in bytes
// (insertions, deletions, substitutions and swaps of adjacent bytes, no
// substring edited twice), or k+1 if it is more than k. Only the band of
// cells within k of the diagonal is computed, and it stops at the first
// row that is all over k: about len(a)·(2k+1) steps at most. buf holds
// three rows (3·(len(b)+1) ints); it is made if shorter.
func osa(a, b string, k int, buf []int) int {
	n, m := len(a), len(b)
	over := k + 1
	if n-m > k || m-n > k {
		return over
	}
	w := m + 1
	if len(buf) < 3*w {
		buf = make([]int, 3*w)
	}
	prev2, prev, cur := buf[:w], buf[w:2*w], buf[2*w:3*w]
	for j := range prev {
		prev[j] = min(j, over)
	}
	for i := 1; i <= n; i++ {
		lo, hi := max(1, i-k), min(m, i+k)
		rowMin := over
		if lo == 1 {
			cur[0] = min(i, over)
			rowMin = cur[0]
		} else {
			cur[lo-1] = over
		}
		for j := lo; j <= hi; j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d := min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d = min(d, prev2[j-2]+1)
			}
			d = min(d, over)
			cur[j] = d
			rowMin = min(rowMin, d)
		}
		if hi < m {
			cur[hi+1] = over
		}
		if rowMin > k {
			return over
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[m]
}

// lcs is the length of the longest common subsequence of a and b: how
// much of what was typed (a) a close name keeps. buf as for osa.
func lcs(a, b string, buf []int) int {
	w := len(b) + 1
	if len(buf) < 2*w {
		buf = make([]int, 2*w)
	}
	prev, cur := buf[:w], buf[w:2*w]
	clear(prev)
	for i := 1; i <= len(a); i++ {
		cur[0] = 0
		for j := 1; j <= len(b); j++ {
			if a[i-1] == b[j-1] {
				cur[j] = prev[j-1] + 1
			} else {
				cur[j] = max(prev[j], cur[j-1])
			}
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Suggest returns up to MaxSuggestions names of the package set latest
// selects that are close to name, as an image name spells them (lower
// case), best first; nil if none is close, or if the package list is
// not in memory yet: it never waits for the list, and never starts
// making it.
func (s *Searcher) Suggest(name string) []string {
	s.mu.Lock()
	x := s.idx
	s.mu.Unlock()
	if x == nil {
		return nil
	}
	return x.suggest.suggest(name)
}

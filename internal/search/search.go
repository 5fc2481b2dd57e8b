// Package search is the package search: the package list of the package
// set that the tag latest selects, made by one Nix evaluation per package
// set (kept in storage for a commit, so that a restart or another replica
// need not evaluate nixpkgs again), and the query over it, with its
// ranking and bounds. The web's search page and API ask it; the builder
// asks it for the close names of an unknown package ("did you mean",
// suggest.go), which it answers from the list in memory or not at all.
package search

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nixery/nixery/internal/fault"
	"github.com/nixery/nixery/internal/metadata"
	"github.com/nixery/nixery/internal/nix"
	"github.com/nixery/nixery/internal/source"
)

// DefaultTTL is how long the package list of a moving source is
// reused.
const DefaultTTL = 30 * time.Minute

// Search limits: results per answer by default and at most.
const (
	defaultLimit = 50
	maxLimit     = 500
)

// Query limits. A search compares every word with every package (about
// words × packages substring tests), so a query is bounded in bytes and in
// distinct words; nothing a person types into a search box comes near.
const (
	maxQueryBytes = 200
	maxQueryWords = 8
)

// QueryError is a search query over the limits; it answers 400.
type QueryError struct{ Message string }

func (e *QueryError) Error() string { return e.Message }

func (e *QueryError) Fault() fault.Fault { return fault.Fault{Kind: fault.Invalid} }

// query is a search query prepared for matching: lower case, its words
// distinct and in the order typed.
type query struct {
	text  string   // the words joined by single spaces
	words []string // distinct, never empty
}

// parseQuery checks a query against the limits and prepares it. Empty
// words (runs of spaces) are ignored and repeated words count once; an
// empty query is valid and matches nothing.
func parseQuery(raw string) (query, error) {
	raw = strings.TrimSpace(raw)
	if len(raw) > maxQueryBytes {
		return query{}, &QueryError{fmt.Sprintf("search query too long: %d bytes, at most %d", len(raw), maxQueryBytes)}
	}
	var words []string
	for _, w := range strings.Fields(strings.ToLower(raw)) {
		if !slices.Contains(words, w) {
			words = append(words, w)
		}
	}
	if len(words) > maxQueryWords {
		return query{}, &QueryError{fmt.Sprintf("search query has too many words: %d, at most %d", len(words), maxQueryWords)}
	}
	return query{text: strings.Join(words, " "), words: words}, nil
}

// Limit reads the limit parameter of a search: defaultLimit unless it is
// a positive number, and never more than maxLimit.
func Limit(v string) int {
	if l, err := strconv.Atoi(v); err == nil && l > 0 {
		return min(l, maxLimit)
	}
	return defaultLimit
}

// searchWait is how long a search waits for the package list being made
// before it answers 503 "try again" (listing nixpkgs takes a minute or
// more; the demo set, a fraction of a second).
const searchWait = 20 * time.Second

// retryFailed is how long a failed listing is reported before Nix is
// asked again, so that a broken source does not run Nix on every key
// press.
const retryFailed = 30 * time.Second

// index is the package list of one package set, prepared for search:
// lower-cased attribute paths and descriptions are computed once, and a
// search is a linear scan over them (a few milliseconds for nixpkgs'
// hundred thousand packages; see BenchmarkSearch); so is what
// suggestions look up (suggest.go).
type index struct {
	identity string
	revision string
	made     time.Time
	took     time.Duration // how long Nix took to list the packages
	pkgs     []nix.Package
	attrs    []string // lower-case attribute paths
	lasts    []string // lower-case last component of each path
	texts    []string // lower-case "attr version description"
	suggest  *suggester
}

func newIndex(identity, revision string, pkgs []nix.Package) *index {
	x := &index{identity: identity, revision: revision, made: time.Now(), pkgs: pkgs}
	x.attrs = make([]string, len(pkgs))
	x.lasts = make([]string, len(pkgs))
	x.texts = make([]string, len(pkgs))
	for i, p := range pkgs {
		a := strings.ToLower(p.Attr)
		x.attrs[i] = a
		x.lasts[i] = a[strings.LastIndexByte(a, '.')+1:]
		x.texts[i] = a + " " + strings.ToLower(p.Version) + " " + strings.ToLower(p.Description)
	}
	x.suggest = newSuggester(x)
	return x
}

// Result is one search hit.
type Result struct {
	nix.Package
	Image string `json:"image"` // the image name that holds just this package
}

// search ranks the packages matching q and returns the best limit of
// them and the number of all matches. Ranks, best first:
//
//	0 the attribute path is the query           python3
//	1 its last component is the query           xorg.xev for "xev"
//	2 the path starts with the query            python3Packages.requests for "python3p"
//	3 its last component starts with the query  xorg.xev for "xe"
//	4 the path contains the query               bashInteractive for "interactive"
//	5 every word of the query is in the path, version or description
//
// Ties go to the shorter path, then alphabetical order.
func (x *index) search(qy query, limit int) ([]Result, int) {
	q, words := qy.text, qy.words
	if q == "" {
		return nil, 0
	}
	type hit struct{ rank, i int }
	var hits []hit
	for i, a := range x.attrs {
		rank := -1
		switch last := x.lasts[i]; {
		case a == q:
			rank = 0
		case last == q:
			rank = 1
		case strings.HasPrefix(a, q):
			rank = 2
		case strings.HasPrefix(last, q):
			rank = 3
		case strings.Contains(a, q):
			rank = 4
		default:
			all := true
			for _, w := range words {
				if !strings.Contains(x.texts[i], w) {
					all = false
					break
				}
			}
			if all {
				rank = 5
			}
		}
		if rank >= 0 {
			hits = append(hits, hit{rank, i})
		}
	}
	slices.SortFunc(hits, func(a, b hit) int {
		if a.rank != b.rank {
			return a.rank - b.rank
		}
		if la, lb := len(x.attrs[a.i]), len(x.attrs[b.i]); la != lb {
			return la - lb
		}
		return strings.Compare(x.pkgs[a.i].Attr, x.pkgs[b.i].Attr)
	})
	n := min(len(hits), limit)
	out := make([]Result, n)
	for j, h := range hits[:n] {
		out[j] = Result{Package: x.pkgs[h.i], Image: x.attrs[h.i]}
	}
	return out, len(hits)
}

// Searcher holds the index of the current package set: made by one Nix
// evaluation per source identity (shared by all searches that need it),
// remade after the TTL for a moving source while the old one still
// answers, and, for an immutable source, kept in storage so that a
// restart or another replica need not evaluate nixpkgs again. Nix,
// Source and Metadata are required.
type Searcher struct {
	Nix      *nix.Runner     // lists the packages
	Source   source.Source   // the package source
	Metadata *metadata.Store // where the package lists of commits are kept
	// Health, if set, says which package set latest selects, as its
	// background rounds last found it (sourcehealth.Watcher), so that a
	// search never waits for the source; without it (tests) latest is
	// resolved at each search.
	Health Health
	// TTL is how long the package list of a moving source (a
	// directory, a channel or branch name) is reused before it is listed
	// again; 0 means DefaultTTL. The list of a commit is kept.
	TTL    time.Duration
	Logger *slog.Logger

	mu      sync.Mutex
	idx     *index
	loading chan struct{} // closed when the listing in progress ends
	err     error         // the last listing's failure
	errAt   time.Time
}

// Health is what a search needs of the source's health: the package set
// latest selects once it is resolved, and a channel closed then.
type Health interface {
	Latest() (source.Resolved, bool)
	Resolved() <-chan struct{}
}

func (s *Searcher) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// ErrIndexing is returned while the package list is being made and the
// search could not wait for it.
var ErrIndexing = fault.New("the package list is being made (Nix is evaluating the package set); try again in a moment", fault.Fault{Kind: fault.Unavailable, RetryAfter: 5 * time.Second})

// ErrResolving is returned while the package source's tag latest has not
// been resolved yet (a search does not wait for a repository).
var ErrResolving = fault.New("the package source is being resolved; try again in a moment", fault.Fault{Kind: fault.Unavailable, RetryAfter: 5 * time.Second})

// latest is the package set the tag latest selects, as the background
// rounds last found it (Health), so that a search never waits for the
// source; without them (tests) it is resolved now.
func (s *Searcher) latest(ctx context.Context) (source.Resolved, error) {
	if s.Health == nil {
		return s.Source.Resolve(ctx, "latest")
	}
	if res, ok := s.Health.Latest(); ok {
		return res, nil
	}
	return source.Resolved{}, ErrResolving
}

// packageIndex returns the index for the package set that "latest" selects.
func (s *Searcher) packageIndex(ctx context.Context) (*index, error) {
	res, err := s.latest(ctx)
	if err != nil {
		return nil, err
	}
	ttl := s.TTL
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	s.mu.Lock()
	cur := s.idx
	if cur != nil && cur.identity == res.Identity && (res.Immutable || time.Since(cur.made) < ttl) {
		s.mu.Unlock()
		return cur, nil
	}
	if s.loading == nil {
		if s.err != nil && time.Since(s.errAt) < retryFailed {
			err := s.err
			s.mu.Unlock()
			if cur != nil {
				return cur, nil // the old list beats none
			}
			return nil, err
		}
		s.loading = make(chan struct{})
		go s.load(res.Identity, res.Revision, res.Immutable, res.Type, res.Args, s.loading)
	}
	wait := s.loading
	s.mu.Unlock()
	if cur != nil {
		// Answer from the old list while the new one is made.
		return cur, nil
	}
	t := time.NewTimer(searchWait)
	defer t.Stop()
	select {
	case <-wait:
	case <-t.C:
		return nil, ErrIndexing
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.idx != nil && s.idx.identity == res.Identity {
		return s.idx, nil
	}
	if s.err != nil {
		return nil, s.err
	}
	return nil, ErrIndexing
}

// Preload starts making the package list, so that the first search finds
// it ready, once latest is resolved. It returns at once.
func (s *Searcher) Preload(ctx context.Context) {
	go func() {
		if s.Health != nil {
			select {
			case <-s.Health.Resolved():
			case <-ctx.Done():
				return
			}
		}
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, _ = s.packageIndex(ctx)
	}()
}

// load makes the index of one package set, detached from any request.
func (s *Searcher) load(identity, revision string, immutable bool, srcType, srcArgs string, done chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), nix.DefaultSearchTimeout)
	defer cancel()
	log := s.logger().With("source", identity)
	start := time.Now()
	var (
		pkgs []nix.Package
		err  error
		from = "nix"
	)
	if immutable {
		if pkgs, err = s.loadStored(ctx, identity); err != nil {
			pkgs = nil
		} else {
			from = "storage"
		}
	}
	if pkgs == nil {
		pkgs, err = s.Nix.Packages(ctx, nix.SearchRequest{SrcType: srcType, SrcArgs: srcArgs})
		if err == nil && immutable {
			if err := s.store(ctx, identity, pkgs); err != nil {
				log.Warn("package list not stored", "err", err)
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	defer close(done)
	s.loading = nil
	if err != nil {
		log.Warn("package list failed", "seconds", time.Since(start).Seconds(), "err", err)
		s.err, s.errAt = err, time.Now()
		return
	}
	x := newIndex(identity, revision, pkgs)
	x.took = time.Since(start)
	s.idx, s.err = x, nil
	log.Info("package list ready", "packages", len(pkgs), "from", from, "seconds", x.took.Seconds())
}

// maxStoredList bounds a stored package list unpacked: nixpkgs' is about
// 20 MB of JSON. A variable for tests.
var maxStoredList = 256 << 20

// loadStored reads the package list stored for identity, if any. A list
// that cannot be read is an error: the caller lists the packages again.
func (s *Searcher) loadStored(ctx context.Context, identity string) ([]nix.Package, error) {
	data, err := s.Metadata.SearchList(ctx, identity)
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	raw, err := io.ReadAll(io.LimitReader(zr, int64(maxStoredList)+1))
	if err != nil {
		return nil, err
	}
	if len(raw) > maxStoredList {
		// Not what store wrote: a damaged or planted object, which
		// would otherwise unpack into any amount of memory.
		return nil, fmt.Errorf("stored package list unpacks to more than %d MiB", maxStoredList>>20)
	}
	var pkgs []nix.Package
	if err := json.Unmarshal(raw, &pkgs); err != nil {
		return nil, err
	}
	return pkgs, nil
}

func (s *Searcher) store(ctx context.Context, identity string, pkgs []nix.Package) error {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if err := json.NewEncoder(zw).Encode(pkgs); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return s.Metadata.PutSearchList(ctx, identity, buf.Bytes())
}

// Answer is the JSON of /api/search.
type Answer struct {
	Query    string   `json:"query"`
	Total    int      `json:"total"`    // matches, of which Results has the best
	Packages int      `json:"packages"` // packages in the set
	Revision string   `json:"revision,omitempty"`
	Results  []Result `json:"results"`
}

// Search answers the query q (as typed) with the best limit packages of
// the package set latest selects (limit as Limit reads it; out of its
// bounds, the default or the most). A query over the bounds is a
// *QueryError; ErrResolving and ErrIndexing say to try again soon.
func (s *Searcher) Search(ctx context.Context, q string, limit int) (*Answer, error) {
	if limit <= 0 {
		limit = defaultLimit
	}
	limit = min(limit, maxLimit)
	qy, err := parseQuery(q)
	if err != nil {
		return nil, err
	}
	x, err := s.packageIndex(ctx)
	if err != nil {
		return nil, err
	}
	results, total := x.search(qy, limit)
	if results == nil {
		results = []Result{}
	}
	return &Answer{Query: q, Total: total, Packages: len(x.pkgs), Revision: x.revision, Results: results}, nil
}

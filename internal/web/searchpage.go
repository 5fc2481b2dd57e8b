package web

import (
	"context"
	"net/http"

	"github.com/nixery/nixery/internal/search"
)

// Searcher is the package search the search page and API ask
// (search.Searcher; a fake in tests).
type Searcher interface {
	// Search answers the query q (as typed) with the best limit
	// packages, limit as search.Limit reads the parameter.
	Search(ctx context.Context, q string, limit int) (*search.Answer, error)
}

func (s *Site) searchRun(r *http.Request) (*search.Answer, error) {
	return s.Search.Search(r.Context(), r.URL.Query().Get("q"), search.Limit(r.URL.Query().Get("limit")))
}

func (s *Site) searchAPI(w http.ResponseWriter, r *http.Request) {
	ans, err := s.searchRun(r)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, r, http.StatusOK, ans)
}

func (s *Site) searchPage(w http.ResponseWriter, r *http.Request) {
	data := map[string]any{"Title": "Search · Nixery", "Query": r.URL.Query().Get("q")}
	ans, err := s.searchRun(r)
	if err != nil {
		data["Error"] = err.Error()
		s.render(w, r, errorHeader(w, err), "search.html", data)
		return
	}
	data["Answer"] = ans
	s.render(w, r, http.StatusOK, "search.html", data)
}

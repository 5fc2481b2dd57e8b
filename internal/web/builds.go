package web

import (
	"net/http"
	"strconv"
)

// buildsPage is the operator's page of builds: those of this process
// running and waiting now, and the last ones that ended, with their
// phases and errors (builder.Builds). Behind the instance's
// authentication, like every page (cmd/nixery wraps the site in
// access.Guard).
func (s *Site) buildsPage(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusOK, "builds.html", map[string]any{"Title": "Builds · Nixery", "Builds": s.Builder.Builds(), "NoIndex": true})
}

// buildsAPI is /api/builds: builder.Builds as JSON.
func (s *Site) buildsAPI(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, r, http.StatusOK, s.Builder.Builds())
}

// seconds formats a duration in seconds for people: 0.42 s, 12.3 s, 95 s.
func seconds(v float64) string {
	switch {
	case v < 10:
		return strconv.FormatFloat(v, 'f', 2, 64) + " s"
	case v < 60:
		return strconv.FormatFloat(v, 'f', 1, 64) + " s"
	}
	return strconv.FormatFloat(v, 'f', 0, 64) + " s"
}

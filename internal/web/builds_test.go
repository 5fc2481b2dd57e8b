package web

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/nixery/nixery/internal/builder"
)

// With the package list in memory, an unknown package's build ends with
// close names and the images they select, in the stream the page reads;
// /builds and /api/builds then list the builds that ended.
func TestSuggestionsAndBuilds(t *testing.T) {
	s := newSite(t)
	searcher := s.Search.(interface {
		Suggest(string) []string
	})
	s.Builder.Suggest = searcher.Suggest
	// The first search makes the package list (the server preloads it).
	if _, err := s.Search.Search(context.Background(), "hello", 1); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	defer srv.Close()

	events := stream(t, srv, "shell/helo")
	last := events[len(events)-1]
	if last.Kind != "error" || !strings.Contains(last.Message, "helo (did you mean hello") ||
		len(last.Suggestions) == 0 || last.Suggestions[0] != (builder.Suggestion{Package: "helo", Name: "hello", Image: "shell/hello"}) {
		t.Errorf("last event of shell/helo: %+v", last)
	}
	if events := stream(t, srv, "hello"); events[len(events)-1].Kind != "done" {
		t.Fatalf("hello: %+v", events[len(events)-1])
	}

	rec := get(t, s, "GET", "/api/builds")
	var b builder.Builds
	if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil || rec.Code != 200 || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("/api/builds: %d %v %s", rec.Code, err, rec.Body)
	}
	var results []string
	for _, r := range b.Finished {
		results = append(results, r.Image+" "+r.Result)
	}
	if !slices.Equal(results, []string{"hello ok", "shell/helo failed"}) || len(b.Running)+len(b.Waiting) != 0 || b.Kept != 200 {
		t.Errorf("/api/builds: %s", rec.Body)
	}
	for _, want := range []string{`"running":[]`, `"waiting":[]`, `"phases":[{"phase":"realise","seconds":`, `"error":"unknown package(s): helo (did you mean hello`} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("/api/builds lacks %s: %s", want, rec.Body)
		}
	}

	rec = get(t, s, "GET", "/builds")
	page := rec.Body.String()
	for _, want := range []string{`<meta name="robots" content="noindex, nofollow">`, `href="/image/hello"`, `href="/image/shell/helo"`,
		`<td class="ok">ok</td>`, `<td class="bad">failed</td>`, "realise ", "unknown package(s): helo (did you mean hello", "Running now (0)", "Waiting now (0)"} {
		if !strings.Contains(page, want) {
			t.Errorf("/builds lacks %s:\n%s", want, page)
		}
	}
	if rec := get(t, s, "GET", "/"); !strings.Contains(rec.Body.String(), `href="/builds"`) {
		t.Error("the index page does not link /builds")
	}
}

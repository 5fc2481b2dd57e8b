package builder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nixery/nixery/internal/image"
	"github.com/nixery/nixery/internal/manifest"
	"github.com/nixery/nixery/internal/nix"
	"github.com/nixery/nixery/internal/source"
)

// The history keeps the last maxHistory builds, newest first.
func TestHistoryBounded(t *testing.T) {
	var h history
	if got := h.list(); len(got) != 0 {
		t.Fatalf("empty history: %v", got)
	}
	for i := range maxHistory + 50 {
		h.add(Record{Image: fmt.Sprint(i)})
		if i == 2 {
			if got := h.list(); len(got) != 3 || got[0].Image != "2" || got[2].Image != "0" {
				t.Fatalf("three builds: %v", got)
			}
		}
	}
	got := h.list()
	if len(got) != maxHistory || got[0].Image != fmt.Sprint(maxHistory+49) || got[maxHistory-1].Image != "50" {
		t.Errorf("%d records from %s to %s, want %d from %d to 50", len(got), got[0].Image, got[len(got)-1].Image, maxHistory, maxHistory+49)
	}
	if len(h.records) != maxHistory || cap(h.records) > 2*maxHistory {
		t.Errorf("the ring holds %d (capacity %d)", len(h.records), cap(h.records))
	}
}

// A build's error is shown without the credentials of its URLs, and cut.
func TestShownErrorRedacted(t *testing.T) {
	err := &nix.BuildError{Err: errors.New("fetching https://bob:s3cret@git.example/pkgs.git: failed")}
	if got := shownError(err); strings.Contains(got, "s3cret") || !strings.Contains(got, "https://bob:xxxxx@git.example") {
		t.Errorf("shownError = %q", got)
	}
	long := errors.New(strings.Repeat("é", maxShownError) + " https://alice:token@host/")
	got := shownError(long)
	if len(got) > maxShownError+8 || strings.Contains(got, "token") || !strings.HasSuffix(got, "…") || !strings.HasPrefix(got, "éé") {
		t.Errorf("a long error is shown as %d bytes ending %q", len(got), got[max(0, len(got)-20):])
	}
	cut := errors.New(strings.Repeat("x", maxShownError-12) + " https://alice:token@host/")
	if got := shownError(cut); strings.Contains(got, "alice:tok") || strings.Contains(got, "token") {
		t.Errorf("a URL cut short shows its credentials: %q", got[len(got)-30:])
	}
}

// The JSON of /api/builds, as docs/operating.md documents it.
func TestBuildsJSON(t *testing.T) {
	start := time.Date(2026, 12, 7, 1, 2, 3, 0, time.UTC)
	b := Builds{
		Running: []Active{{Image: "shell/git", Tag: "latest", Started: start, Seconds: 2.5, Phase: "pack",
			Phases: []PhaseTime{{"realise", 1}, {"graph", 0.25}, {"layers", 0.25}, {"pack", 1}}}},
		Waiting: []Active{{Image: "htop", Tag: "latest", Started: start, Seconds: 0.5, Phases: []PhaseTime{}}},
		Finished: []Record{
			{Image: "shell/helo", Tag: "latest", Result: "failed", Started: start, Seconds: 0.4,
				Phases: []PhaseTime{{"realise", 0.4}}, Error: "unknown package(s): helo (did you mean hello?)"},
			{Image: "hello", Tag: "latest", Result: "ok", Started: start, Seconds: 1.5,
				Phases: []PhaseTime{{"realise", 1}}, Digest: "sha256:abc"},
		},
		Kept: maxHistory,
	}
	data, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"running":[{"image":"shell/git","tag":"latest","started":"2026-12-07T01:02:03Z","seconds":2.5,"phase":"pack",` +
		`"phases":[{"phase":"realise","seconds":1},{"phase":"graph","seconds":0.25},{"phase":"layers","seconds":0.25},{"phase":"pack","seconds":1}]}],` +
		`"waiting":[{"image":"htop","tag":"latest","started":"2026-12-07T01:02:03Z","seconds":0.5,"phases":[]}],` +
		`"finished":[{"image":"shell/helo","tag":"latest","result":"failed","started":"2026-12-07T01:02:03Z","seconds":0.4,` +
		`"phases":[{"phase":"realise","seconds":0.4}],"error":"unknown package(s): helo (did you mean hello?)"},` +
		`{"image":"hello","tag":"latest","result":"ok","started":"2026-12-07T01:02:03Z","seconds":1.5,"phases":[{"phase":"realise","seconds":1}],"digest":"sha256:abc"}],` +
		`"kept":200}`
	if string(data) != want {
		t.Errorf("got  %s\nwant %s", data, want)
	}
}

// A build's phases take from their start to the next phase's, the last
// to the end; a phase announced again is no new phase.
func TestProgressTimes(t *testing.T) {
	var p progress
	p.publish(Event{Kind: "queued"})
	for _, ph := range []string{"realise", "realise", "graph"} {
		p.phase(ph, "")
	}
	end := time.Now().Add(time.Second)
	got := p.snapshot(end)
	if got.current != "graph" || got.running || got.ended || len(got.phases) != 2 || got.phases[0].Phase != "realise" || got.phases[1].Phase != "graph" {
		t.Fatalf("snapshot: %+v", got)
	}
	if got.phases[1].Seconds < 1 || got.started.After(p.phases[0].at) {
		t.Errorf("the last phase runs to the end: %+v", got)
	}
	p.setRunning()
	if !p.snapshot(end).running {
		t.Error("not running after setRunning")
	}
	p.publish(Event{Kind: "done"})
	if !p.snapshot(end).ended {
		t.Error("not ended after the final event")
	}
}

// With real Nix over the demo set: builds that run and wait are listed
// while they do, and each one that ends is recorded with its result, its
// phases and, for a failure, its error with the suggestions it got.
func TestBuildsListed(t *testing.T) {
	b := newBuilder(t, source.PathSource{Path: demoSet(t)}, t.TempDir())
	b.MaxBuilds, b.QueueSize = 1, 4
	b.Suggest = func(name string) []string {
		if name == "helo" {
			return []string{"hello"}
		}
		return nil
	}
	inSlot, release := make(chan string, 4), make(chan struct{})
	b.inSlot = func(req *image.Request) {
		inSlot <- req.Name
		<-release
	}
	ctx := context.Background()
	first, err := b.Watch(ctx, request(t, "hello", "latest"))
	if err != nil {
		t.Fatal(err)
	}
	if got := <-inSlot; got != "hello" {
		t.Fatalf("in the slot: %s", got)
	}
	second, err := b.Watch(ctx, request(t, "jq", "latest")) // its flight exists now, without a slot
	if err != nil {
		t.Fatal(err)
	}
	now := b.Builds()
	if len(now.Running) != 1 || now.Running[0].Image != "hello" || len(now.Waiting) != 1 || now.Waiting[0].Image != "jq" || len(now.Finished) != 0 {
		t.Fatalf("while hello runs: %+v", now)
	}
	close(release)
	for range first {
	}
	for range second {
	}
	<-inSlot
	failed, err := b.Watch(ctx, request(t, "shell/helo", "latest"))
	if err != nil {
		t.Fatal(err)
	}
	var last Event
	for e := range failed {
		last = e
	}
	want := []Suggestion{{Package: "helo", Name: "hello", Image: "shell/hello"}}
	if last.Kind != "error" || !strings.Contains(last.Message, "helo (did you mean hello?)") || !slices.Equal(last.Suggestions, want) {
		t.Errorf("the failed build's final event: %+v", last)
	}
	// The failure remembered has the suggestions too, for a pull.
	if _, _, err := b.Manifest(ctx, request(t, "shell/helo", "latest"), manifest.OCIManifest); err == nil || !strings.Contains(err.Error(), "did you mean hello?") {
		t.Errorf("a pull of shell/helo: %v", err)
	}
	done := b.Builds()
	if len(done.Running)+len(done.Waiting) != 0 || len(done.Finished) != 3 {
		t.Fatalf("after the builds: %+v", done)
	}
	helo, jq, hello := done.Finished[0], done.Finished[1], done.Finished[2]
	if helo.Image != "shell/helo" || helo.Result != "failed" || !strings.Contains(helo.Error, "did you mean hello?") || helo.Digest != "" {
		t.Errorf("the failed build: %+v", helo)
	}
	for _, r := range []Record{jq, hello} {
		var phases []string
		var sum float64
		for _, p := range r.Phases {
			phases = append(phases, p.Phase)
			sum += p.Seconds
		}
		if r.Result != "ok" || r.Error != "" || !strings.HasPrefix(r.Digest.String(), "sha256:") || !slices.Equal(phases, Phases) || sum > r.Seconds || r.Started.IsZero() {
			t.Errorf("a build that succeeded: %+v", r)
		}
	}
	if jq.Image != "jq" || hello.Image != "hello" {
		t.Errorf("newest first: %s, %s", jq.Image, hello.Image)
	}
}

// Suggestions are asked for the first maxSuggested unknown names only,
// once per failure, and only for Nix's own error: the message stays
// bounded however many and however long the names.
func TestSuggestBounded(t *testing.T) {
	asked := 0
	long := strings.Repeat("x", 128)
	b := &Builder{Suggest: func(name string) []string {
		asked++
		return []string{long + "1", long + "2", long + "3"}
	}}
	var names []string
	for i := range 40 {
		names = append(names, fmt.Sprintf("%s%02d", strings.Repeat("ü", 2), i))
	}
	unknown := &nix.UnknownPackagesError{Packages: names}
	err := b.suggest(unknown)
	if asked != maxSuggested {
		t.Errorf("asked %d times, want %d", asked, maxSuggested)
	}
	if n := len(err.Error()); n > len(unknown.Error())+maxSuggested*(3*(len(long)+1)+30) {
		t.Errorf("a message of %d bytes", n)
	}
	if again := b.suggest(err); again != err || asked != maxSuggested {
		t.Errorf("asked again for a failure that has its suggestions")
	}
	if wrapped := fmt.Errorf("x: %w", unknown); b.suggest(wrapped) != wrapped {
		t.Errorf("a wrapped error changed")
	}
	if unknown.Suggestions != nil {
		t.Errorf("the original error changed")
	}
	e := errorEvent(request(t, "shell/a", "latest"), err)
	if len(e.Suggestions) != 3*maxSuggested || e.Suggestions[0].Image != "" {
		// no component of the image name is "üü00": no image to link
		t.Errorf("%d suggestions in the event, the first %+v", len(e.Suggestions), e.Suggestions[0])
	}
}

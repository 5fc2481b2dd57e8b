package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/nixery/nixery/internal/builder"
	"github.com/nixery/nixery/internal/image"
	"github.com/nixery/nixery/internal/manifest"
)

// ImageView is an image's details as the image page and /api/image show
// them.
type ImageView struct {
	*builder.Details
	ClosureSize int64       `json:"closureSize"` // sum of the store paths' NAR sizes
	ImageSize   int64       `json:"imageSize"`   // sum of the compressed layers
	Layers      []LayerView `json:"layers"`
	Commands    Commands    `json:"commands"`
	// SupplyChain is the image's SBOMs, provenance and signature; nil
	// when they are not made (yet).
	SupplyChain *SupplyChainView `json:"supplyChain,omitempty"`
	// Picture is the closure drawn (the page only: showImage sets it).
	Picture *Picture `json:"-"`
}

// LayerView is a layer and the other recent images that share it.
type LayerView struct {
	builder.LayerInfo
	Customisation bool     `json:"customisation,omitempty"`
	SharedWith    []string `json:"sharedWith,omitempty"` // names of other recent images with this layer
}

// view adds sizes, sharing and commands to an image's details. Sharing is
// computed against the recently built images (builder.Recent): a layer they
// also have is one a client that pulled them already holds.
func (s *Site) view(r *http.Request, req *image.Request, d *builder.Details, recent []*builder.Details) *ImageView {
	v := &ImageView{Details: d, Commands: s.commands(r, req), SupplyChain: s.supplyChain(r, req, d)}
	for _, p := range d.Closure {
		v.ClosureSize += p.Size
	}
	self := d.Manifests[manifest.OCIManifest]
	owners := map[digest.Digest][]string{}
	for _, o := range recent {
		if o.Manifests[manifest.OCIManifest] == self {
			continue
		}
		for _, l := range o.Layers {
			if names := owners[l.Digest]; !slices.Contains(names, o.Name) {
				owners[l.Digest] = append(names, o.Name)
			}
		}
	}
	for i, l := range d.Layers {
		v.ImageSize += l.Size
		v.Layers = append(v.Layers, LayerView{LayerInfo: l, Customisation: i == len(d.Layers)-1 && len(l.Paths) == 0, SharedWith: owners[l.Digest]})
	}
	return v
}

func (s *Site) imagePage(w http.ResponseWriter, r *http.Request, req *image.Request) {
	d, err := s.Builder.Details(r.Context(), req)
	switch {
	case errors.Is(err, builder.ErrNotBuilt):
		// Not built (or expired): offer to build it.
		s.showImage(w, r, req, nil, nil)
	case err != nil:
		s.failErr(w, r, err)
	default:
		s.showImage(w, r, req, d, s.Builder.Recent())
	}
}

// showImage renders the image page of req: its details d (nil if it is
// not built), its layers' sharing with the recent images, and the
// comparison ?compare= asks for.
func (s *Site) showImage(w http.ResponseWriter, r *http.Request, req *image.Request, d *builder.Details, recent []*builder.Details) {
	data := map[string]any{"Title": req.Ref() + " · Nixery", "Ref": req.Ref(), "Req": req, "Commands": s.commands(r, req)}
	status := http.StatusOK
	if d != nil {
		v := s.view(r, req, d, recent)
		v.Picture = picture(d)
		data["Image"] = v
		if r.URL.Query().Has("compare") {
			cv := s.compareWith(w, r, req, d, r.URL.Query().Get("compare"))
			if cv.status != 0 {
				status = cv.status
			}
			data["Compare"] = cv
		}
	}
	s.render(w, r, status, "image.html", data)
}

// CompareView is the comparison the image page shows for ?compare=:
// the comparison, or why there is none.
type CompareView struct {
	Other      string // the other image's reference
	Comparison *Comparison
	NotBuilt   bool   // the other image is not built: the page links its build
	Error      string // the other name is invalid, or its details unreadable
	status     int    // of the page, with Error
}

// compareWith compares d with the image other names. It never builds: a
// GET starts no build (see the package doc); an image not built yet is
// said to be so, with a link to its build page.
func (s *Site) compareWith(w http.ResponseWriter, r *http.Request, self *image.Request, d *builder.Details, other string) *CompareView {
	req, err := image.ParseRef(strings.Trim(strings.TrimSpace(other), "/"))
	if err != nil {
		return &CompareView{Other: other, Error: err.Error(), status: http.StatusBadRequest}
	}
	cv := &CompareView{Other: req.Ref()}
	od, err := s.Builder.Details(r.Context(), req)
	switch {
	case errors.Is(err, builder.ErrNotBuilt):
		cv.NotBuilt = true
	case err != nil:
		cv.Error, cv.status = err.Error(), errorHeader(w, err)
	default:
		cv.Comparison = compare(d, od)
		cv.Comparison.A, cv.Comparison.B = self.Ref(), req.Ref()
	}
	return cv
}

func (s *Site) imageAPI(w http.ResponseWriter, r *http.Request, req *image.Request) {
	d, err := s.Builder.Details(r.Context(), req)
	if errors.Is(err, builder.ErrNotBuilt) {
		s.fail(w, r, http.StatusNotFound, fmt.Sprintf("%s is not built yet; GET /api/build/%s/events builds it", req.Ref(), req.Ref()))
		return
	}
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, r, http.StatusOK, s.view(r, req, d, s.Builder.Recent()))
}

// buildPage shows a build live. A GET (or HEAD) only renders the page:
// its script opens the event stream, which starts or joins the build, so
// a crawler that follows a link runs no Nix. For browsers without
// JavaScript the page has a form that POSTs here: that starts the build
// (or joins the one in flight), waits a moment so that a quick build is
// done, and answers 303 See Other to the page (POST/redirect/GET,
// https://www.rfc-editor.org/rfc/rfc9110#name-303-see-other).
func (s *Site) buildPage(w http.ResponseWriter, r *http.Request, req *image.Request) {
	if r.Method == http.MethodPost {
		ctx, cancel := context.WithTimeout(r.Context(), startWait)
		ch, err := s.Builder.Watch(ctx, req)
		if err != nil {
			cancel()
			s.failErr(w, r, err)
			return
		}
		for range ch {
		}
		cancel() // the build goes on without this watcher
		http.Redirect(w, r, "/build/"+req.Ref()+"?started=1", http.StatusSeeOther)
		return
	}
	data := map[string]any{"Title": "Building " + req.Ref() + " · Nixery", "Ref": req.Ref(), "Req": req,
		"Commands": s.commands(r, req), "Phases": builder.Phases, "NoIndex": true,
		"Started": r.URL.Query().Has("started")}
	s.render(w, r, http.StatusOK, "build.html", data)
}

// startWait is how long a POST to a build page waits for the build before
// it redirects to the page.
const startWait = 10 * time.Second

// events streams the build of req as server-sent events
// (https://html.spec.whatwg.org/multipage/server-sent-events.html): one
// message per builder.Event, its JSON in the data field, flushed at once;
// the stream ends after the final event ("done" or "error"). Watch starts
// the build if it is neither cached nor in flight. Failures to start are
// sent as an "error" event too, so that every client (EventSource, the
// CLI) reads one format; only an invalid name is a plain 400.
func (s *Site) events(w http.ResponseWriter, r *http.Request, req *image.Request) {
	// Over its limit a client gets 429 with Retry-After, as JSON: an
	// EventSource stops reconnecting on it, and the CLI shows the error.
	release, err := s.Streams.Open(r.Context())
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	defer release()
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return
	}
	send := func(e builder.Event) error {
		if err := writeEvent(w, e); err != nil {
			return err
		}
		return rc.Flush()
	}
	ch, err := s.Builder.Watch(r.Context(), req)
	if err != nil {
		w.WriteHeader(http.StatusOK)
		send(builder.Event{Time: time.Now().UTC(), Kind: "error", Message: err.Error()})
		return
	}
	w.WriteHeader(http.StatusOK)
	// Tell EventSource to reconnect soon if the connection drops; a new
	// connection replays the build's events from its start.
	fmt.Fprint(w, "retry: 2000\n\n")
	rc.Flush()
	keepAlive := time.NewTicker(15 * time.Second)
	defer keepAlive.Stop()
	for {
		select {
		case e, ok := <-ch:
			if !ok {
				return
			}
			if err := send(e); err != nil || e.Final() {
				return
			}
		case <-keepAlive.C:
			// A comment line keeps proxies from closing a quiet stream
			// while Nix builds.
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
			rc.Flush()
		case <-r.Context().Done():
			return
		}
	}
}

// writeEvent writes one server-sent event: e as JSON in one data line.
// JSON escapes line breaks inside strings, so a Nix log line or an error
// message, whatever it holds, cannot end the line and forge an event.
func writeEvent(w io.Writer, e builder.Event) error {
	data, err := json.Marshal(e)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "data: %s\n\n", data)
	return err
}

// EventsPath is the path of the event stream of an image's build.
func EventsPath(ref string) string {
	return "/api/build/" + strings.TrimPrefix(ref, "/") + "/events"
}

// Package web serves the human side of Nixery: the pages that tell a
// visitor how to use this registry, find packages, see what is in an
// image and watch it being built.
//
//	GET /                               index: how to pull from this host, source, recent images
//	GET /search?q=…                     package search (the index page searches as you type)
//	GET /image/<name>[:<tag>]           an image: packages, a picture of its closure, layers, pull commands
//	    …?compare=<name>[:<tag>]        the same, compared with another built image (never builds it)
//	GET /build/<name>[:<tag>]           shows the build live (its script opens the event stream)
//	POST /build/<name>[:<tag>]          starts (or joins) the build, then 303 to the page
//	GET /api/search?q=…[&limit=n]       JSON search results
//	GET /api/image/<name>[:<tag>]       JSON image details (404 if not built)
//	GET /api/build/<name>[:<tag>]/events  starts (or joins) the build: its server-sent events
//	GET /builds                         for operators: the builds running and waiting now, the last ones that ended
//	GET /api/builds                     the same as JSON (builder.Builds)
//	GET /robots.txt                     asks crawlers to keep out of builds
//
// A plain GET of a page never starts a build, so that crawlers and link
// previews cannot make this host run Nix: builds start from the registry
// API, the event stream (which only a script or the CLI opens) or a POST.
//
// Pages are server-rendered HTML with inline CSS and SVG (the picture of
// an image, picture.go) and a little inline JavaScript (live search,
// live progress); nothing is loaded from
// elsewhere, since registries often live on networks without internet.
// Like the registry, routing reads the path by prefix and suffix so that
// image names with any number of slashes just work.
package web

import (
	"bytes"
	"embed"
	"encoding/json"
	"html/template"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nixery/nixery/internal/access"
	"github.com/nixery/nixery/internal/builder"
	"github.com/nixery/nixery/internal/fault"
	"github.com/nixery/nixery/internal/image"
	"github.com/nixery/nixery/internal/route"
	"github.com/nixery/nixery/internal/sourcehealth"
	"github.com/nixery/nixery/internal/supplychain"
)

// Site serves the pages and their JSON endpoints. Builder is required.
type Site struct {
	Builder *builder.Builder
	Version string
	Logger  *slog.Logger
	// Search answers the search page and API; required for them.
	Search Searcher
	// Streams bounds the build event streams open at once, per client
	// and in all; the zero value has the defaults.
	Streams access.Streams
	// SourceHealth, if set, says what the index page shows of the
	// package source: its revision and whether Nix can evaluate it.
	SourceHealth *sourcehealth.Watcher
	// Artifacts, if set, finds what the image page says of an image's
	// SBOMs, provenance and signature, and the key /cosign.pub serves.
	Artifacts *supplychain.Maker
	// TrustProxy takes the host and scheme of the pull commands shown
	// from X-Forwarded-Host and X-Forwarded-Proto (NIXERY_TRUST_PROXY:
	// only behind a reverse proxy that sets them).
	TrustProxy bool
}

//go:embed templates/*.html
var templateFS embed.FS

// pages are the templates. Everything they show that comes from a
// request (names, tags, queries, the Host header, error messages) is
// escaped by html/template for where it lands; values given to the
// scripts are written in script context, where html/template encodes
// them as JSON with <, > and & escaped, so no value can end a <script>.
// Nothing is marked safe (template.HTML, template.JS) by hand.
var pages = template.Must(template.New("").Funcs(template.FuncMap{
	"size":  humanSize,
	"short": shortDigest,
	"lower": strings.ToLower,
	"ago":   ago,
	"secs":  seconds,
	// for the picture and the comparison (picture.html)
	"store":   shortName,
	"num":     svgNumber,
	"add":     func(a, b any) float64 { return toFloat(a) + toFloat(b) },
	"sub":     func(a, b any) float64 { return toFloat(a) - toFloat(b) },
	"add64":   func(a, b int64) int64 { return a + b },
	"count":   count,
	"stripe":  func(h float64) float64 { return min(4, h/4) },
	"pct":     func(a, b int64) string { return svgNumber(100 * ratio(a, b)) },
	"percent": func(a, b int64) string { return strconv.FormatFloat(100*ratio(a, b), 'f', 0, 64) + " %" },
}).ParseFS(templateFS, "templates/*.html"))

func (s *Site) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// ServeHTTP serves the page or API at the path, which it names in the
// request log and metrics (route.Name).
func (s *Site) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	label, serve := s.route(p)
	route.Name(r, label)
	// Answers are what their Content-Type says: a JSON error that echoes a
	// name is never sniffed as HTML.
	w.Header().Set("X-Content-Type-Options", "nosniff")
	// Builds and their streams are no pages to index or follow.
	// https://developers.google.com/search/docs/crawling-indexing/robots-meta-tag#xrobotstag
	if strings.HasPrefix(p, "/build/") || strings.HasPrefix(p, "/api/build/") {
		w.Header().Set("X-Robots-Tag", "noindex, nofollow")
	}
	// Only a build page takes a POST (its "start the build" form for
	// browsers without JavaScript); everything else is read-only.
	takesPost := strings.HasPrefix(p, "/build/")
	if r.Method != http.MethodGet && r.Method != http.MethodHead && (r.Method != http.MethodPost || !takesPost) {
		allow := "GET, HEAD"
		if takesPost {
			allow += ", POST"
		}
		w.Header().Set("Allow", allow)
		s.fail(w, r, http.StatusMethodNotAllowed, "method not allowed: this site is read-only")
		return
	}
	serve(w, r)
}

// Refused answers a request that access.Guard turned away, as the guard
// does (access.DenyPlain), for the route the path asked for.
func (s *Site) Refused(w http.ResponseWriter, r *http.Request, err error) {
	label, _ := s.route(r.URL.Path)
	route.Name(r, label)
	access.DenyPlain(w, r, err)
}

// route is the one reading of a path of the site: its route label and
// what serves it. Fixed pages come first, then the routes that end in an
// image reference.
func (s *Site) route(p string) (route.Label, http.HandlerFunc) {
	withRef := func(ref string, h func(http.ResponseWriter, *http.Request, *image.Request)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) { s.withRef(w, r, ref, h) }
	}
	noPage := func(w http.ResponseWriter, r *http.Request) { s.fail(w, r, http.StatusNotFound, "no such page: "+p) }
	switch {
	case p == "/":
		return route.Web, s.indexPage
	case p == "/robots.txt":
		return route.Web, s.robots
	case p == "/search":
		return route.Web, s.searchPage
	case p == "/api/search":
		return route.APISearch, s.searchAPI
	case p == "/cosign.pub":
		return route.Web, s.publicKey
	case p == "/builds":
		return route.Web, s.buildsPage
	case p == "/api/builds":
		return route.APIOther, s.buildsAPI
	case p == "/image" || p == "/image/":
		return route.Web, s.openImage
	case strings.HasPrefix(p, "/image/"):
		return route.Web, withRef(strings.TrimPrefix(p, "/image/"), s.imagePage)
	case strings.HasPrefix(p, "/api/image/"):
		return route.APIOther, withRef(strings.TrimPrefix(p, "/api/image/"), s.imageAPI)
	case strings.HasPrefix(p, "/build/"):
		return route.Web, withRef(strings.TrimPrefix(p, "/build/"), s.buildPage)
	case strings.HasPrefix(p, "/api/build/") && strings.HasSuffix(p, "/events"):
		return route.APIEvents, withRef(strings.TrimSuffix(strings.TrimPrefix(p, "/api/build/"), "/events"), s.events)
	case strings.HasPrefix(p, "/api/build/"):
		return route.APIEvents, noPage
	case strings.HasPrefix(p, "/api/"):
		return route.APIOther, noPage
	}
	return route.Web, noPage
}

// openImage is the target of the index page's "open an image" form.
func (s *Site) openImage(w http.ResponseWriter, r *http.Request) {
	name := strings.Trim(strings.TrimSpace(r.URL.Query().Get("name")), "/")
	if name == "" {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, "/image/"+name, http.StatusSeeOther)
}

func (s *Site) withRef(w http.ResponseWriter, r *http.Request, ref string, h func(http.ResponseWriter, *http.Request, *image.Request)) {
	req, err := image.ParseRef(ref)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	h(w, r, req)
}

// wantsJSON tells the API routes, whose errors are JSON, from the pages.
func wantsJSON(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, "/api/") }

// fail is the one place that writes an error: a small page for people,
// {"error": …} for the API.
func (s *Site) fail(w http.ResponseWriter, r *http.Request, status int, message string) {
	if status >= 500 {
		s.logger().Warn("web error", "path", r.URL.Path, "status", status, "err", message)
	}
	if wantsJSON(r) {
		writeJSON(w, r, status, map[string]string{"error": message})
		return
	}
	s.render(w, r, status, "error.html", map[string]any{"Title": http.StatusText(status), "Status": status, "Message": message})
}

// render executes a page template into a buffer (so that a template error
// is a clean 500, not half a page) and writes it.
func (s *Site) render(w http.ResponseWriter, r *http.Request, status int, name string, data map[string]any) {
	data["Version"] = s.Version
	data["Host"] = s.host(r)
	var buf bytes.Buffer
	if err := pages.ExecuteTemplate(&buf, name, data); err != nil {
		s.logger().Error("web template", "template", name, "err", err)
		http.Error(w, "template error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		w.Write(buf.Bytes())
	}
}

func writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		w.Write(data)
	}
}

// host is this registry's name as the client reached it, for the pull
// commands shown on the pages. X-Forwarded-Host counts only behind a
// trusted proxy: otherwise any client could have a cache in front of
// Nixery store pages whose pull commands name another registry.
func (s *Site) host(r *http.Request) string {
	if h := r.Header.Get("X-Forwarded-Host"); h != "" && s.TrustProxy {
		return strings.TrimSpace(strings.Split(h, ",")[0])
	}
	if r.Host != "" {
		return r.Host
	}
	return "localhost:8080"
}

// insecure reports whether clients reach this registry over plain HTTP
// (so podman and skopeo need their TLS checks turned off).
func (s *Site) insecure(r *http.Request) bool {
	return r.TLS == nil && !(s.TrustProxy && r.Header.Get("X-Forwarded-Proto") == "https")
}

// Commands are the exact commands to pull and run an image from this host.
type Commands struct {
	Docker, DockerRun, Podman, Skopeo string
}

func (s *Site) commands(r *http.Request, req *image.Request) Commands {
	ref := s.host(r) + "/" + req.Ref()
	tls, srcTLS := "", ""
	if s.insecure(r) {
		tls, srcTLS = "--tls-verify=false ", "--src-tls-verify=false "
	}
	dir := strings.ReplaceAll(req.Name, "/", "-")
	// The image's Cmd: bash with the shell meta-package, else the one
	// requested package's main program, if it names one.
	run := "docker run --rm " + ref
	if slices.Contains(req.Packages, "bashInteractive") {
		run = "docker run -it --rm " + ref
	}
	return Commands{
		Docker:    "docker pull " + ref,
		DockerRun: run,
		Podman:    "podman pull " + tls + ref,
		Skopeo:    "skopeo copy " + srcTLS + "docker://" + ref + " oci:" + dir + ":" + req.Tag,
	}
}

// humanSize formats a byte count for people: 1.5 MiB.
func humanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return strconv.FormatFloat(float64(n)/float64(div), 'f', 1, 64) + " " + string("KMGTPE"[exp]) + "iB"
}

// shortDigest is "sha256:0123456789ab", enough to tell layers apart.
func shortDigest(d any) string {
	s, _ := d.(string)
	if st, ok := d.(interface{ String() string }); ok {
		s = st.String()
	}
	if len(s) > 19 {
		return s[:19]
	}
	return s
}

func ago(t time.Time) string {
	d := time.Since(t).Round(time.Second)
	switch {
	case d < time.Minute:
		return strconv.Itoa(int(d.Seconds())) + " s ago"
	case d < time.Hour:
		return strconv.Itoa(int(d.Minutes())) + " min ago"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d.Hours())) + " h ago"
	}
	return t.Format("2006-01-02")
}

// robotsTxt keeps well-behaved crawlers away from what starts builds
// (https://www.rfc-editor.org/rfc/rfc9309); the pages themselves never
// build on a GET, so this only spares them useless requests.
const robotsTxt = "User-agent: *\nDisallow: /build/\nDisallow: /api/\n"

func (s *Site) robots(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(robotsTxt)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		io.WriteString(w, robotsTxt)
	}
}

// indexPage is the front page.
func (s *Site) indexPage(w http.ResponseWriter, r *http.Request) {
	b := s.Builder
	data := map[string]any{
		"Title":  "Nixery",
		"Source": b.Source.String(),
		"Recent": b.Recent(),
		"Shell":  strings.Join(image.ShellPackages, ", "),
	}
	// What the background rounds found of the source (the revision
	// latest resolves to, whether Nix can evaluate it): the page never
	// waits for a repository, however slow.
	if s.SourceHealth != nil {
		st := s.SourceHealth.Status()
		data["Revision"], data["Resolving"], data["RevisionError"], data["Fault"] = st.Revision, st.Resolving, st.ResolveError, st.Fault
	}
	if s.insecure(r) {
		data["Insecure"] = true
	}
	if s.Artifacts != nil {
		data["SigningKey"] = s.Artifacts.Fingerprint()
	}
	s.render(w, r, http.StatusOK, "index.html", data)
}

// errorStatus maps an error to an HTTP status and the seconds of
// Retry-After (0: none) by the kind it reports (package fault), as the
// registry does, so that a page and a pull of the same image fail alike.
func errorStatus(err error) (status, retryAfter int) {
	f := fault.Of(err)
	return f.Kind.Status(), f.RetrySeconds()
}

// errorHeader sets the Retry-After of err, if it has one, and returns
// its status.
func errorHeader(w http.ResponseWriter, err error) int {
	status, retryAfter := errorStatus(err)
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfter))
	}
	return status
}

// failErr writes err with the status errorStatus gives it.
func (s *Site) failErr(w http.ResponseWriter, r *http.Request, err error) {
	status := errorHeader(w, err)
	msg := err.Error()
	if status == fault.StatusClientClosed {
		msg = "request cancelled"
	}
	s.fail(w, r, status, msg)
}

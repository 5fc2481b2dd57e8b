// Package web serves the human side of Nixery: the index page that tells
// a visitor how to use this registry.
package web

import (
	"bytes"
	"html/template"

	"github.com/nixery/nixery/config"
	"net/http"
	"strconv"
)

// Page is the index page handler.
type Page struct {
	Source  config.Source
	Version string
}

var index = template.Must(template.New("index").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Nixery</title>
<style>
body{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;line-height:1.5;color:#222}
code,pre{font-family:ui-monospace,monospace;background:#f3f3f3;border-radius:4px}
pre{padding:.6rem .8rem;overflow-x:auto}code{padding:0 .2rem}
h1{margin-bottom:0}small{color:#666}
</style></head><body>
<h1>Nixery</h1>
<p><small>A container registry that builds images with Nix on demand · {{.Version}}</small></p>
<p>The image name is the recipe: every path component is a Nix package, and
the image is built the first time anyone pulls it.</p>
<pre>docker pull {{.Host}}/shell/git/htop
podman run -it {{.Host}}/shell/hello bash
skopeo copy docker://{{.Host}}/shell/hello oci:hello:latest</pre>
<h2>Image names</h2>
<ul>
<li>Each component is a package attribute; nested sets use dots: <code>{{.Host}}/xorg.xev</code>.</li>
<li>Registry names are lower case; attributes are matched case-insensitively when that is unambiguous
(<code>bashinteractive</code> finds <code>bashInteractive</code>).</li>
<li>The same packages in any order make the same image.</li>
</ul>
<h2>Meta-packages</h2>
<ul>
<li><code>shell</code> (first component) adds bashInteractive, coreutils, moreutils and nano.</li>
<li><code>arm64</code> (first component) builds for aarch64-linux and marks the image arm64.</li>
</ul>
<h2>This registry</h2>
<p>Package source: <code>{{.Source}}</code>{{if .Revision}}, revision <code>{{.Revision}}</code> (tag <code>latest</code>){{end}}.</p>
<p>It speaks the OCI distribution API (pull only) at <code>/v2/</code>; plain-HTTP hosts other than
localhost need <code>--tls-verify=false</code> or an insecure-registry setting in your client.</p>
</body></html>
`))

func (p *Page) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	host := r.Host
	if host == "" {
		host = "localhost:8080"
	}
	var buf bytes.Buffer
	data := map[string]string{"Host": host, "Source": p.Source.String(), "Version": p.Version}
	// The revision "latest" resolves to, where the source has one.
	if res, err := p.Source.Resolve(r.Context(), "latest"); err == nil {
		data["Revision"] = res.Revision
	} else {
		data["Revision"] = "unavailable: " + err.Error()
	}
	if err := index.Execute(&buf, data); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	if r.Method == http.MethodGet {
		w.Write(buf.Bytes())
	}
}

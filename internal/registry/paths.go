package registry

import (
	"net/url"
	"strings"

	"github.com/nixery/nixery/internal/route"
)

// endpoint is what a path of the API asks for.
type endpoint int

const (
	unknown   endpoint = iota // no such endpoint
	base                      // /v2/
	manifests                 // /v2/<name>/manifests/<reference>
	blobs                     // /v2/<name>/blobs/<digest>
	referrers                 // /v2/<name>/referrers/<digest>
	tags                      // /v2/<name>/tags/list
	uploads                   // /v2/<name>/blobs/uploads[/<reference>]: the push side
)

// apiPath is a request path of the registry API, parsed: what it asks
// for, of which repository, with which reference (tag or digest).
type apiPath struct {
	endpoint  endpoint
	name, ref string
}

// parsePath is the one parser of registry paths. It reads the path from
// the end, so that repository names with any number of slashes just
// work: the segment before the last says what is asked for
// ("…/manifests/<ref>", "…/blobs/<digest>"), and everything before it is
// the name.
//
// It reads the escaped path (URL.EscapedPath) and unescapes each segment
// on its own, so an escaped slash stays inside its segment: in
// /v2/<name>/manifests/refs%2Fheads%2Fmain the reference is
// "refs/heads/main". A manifest path whose reference has raw slashes
// (…/manifests/refs/../x, …/manifests/latest/) has its reference from
// the last "manifests" segment on. Neither names a manifest (no tag has
// a slash), and the manifest handler says so: MANIFEST_UNKNOWN, naming
// the reference.
// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#endpoints
func parsePath(escaped string) apiPath {
	if escaped == "/v2" || escaped == "/v2/" {
		return apiPath{endpoint: base}
	}
	rest, ok := strings.CutPrefix(escaped, "/v2/")
	if !ok {
		return apiPath{}
	}
	elems := strings.Split(rest, "/")
	for i, e := range elems {
		if u, err := url.PathUnescape(e); err == nil {
			elems[i] = u
		}
	}
	// at splits the path at segment i: the name before it, the
	// reference after it; a name has at least one segment.
	at := func(e endpoint, i int) apiPath {
		return apiPath{endpoint: e, name: strings.Join(elems[:i], "/"), ref: strings.Join(elems[i+1:], "/")}
	}
	n := len(elems)
	switch {
	case n >= 3 && elems[n-2] == "blobs" && elems[n-1] == "uploads",
		n >= 4 && elems[n-3] == "blobs" && elems[n-2] == "uploads":
		// https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pushing-blobs
		return apiPath{endpoint: uploads}
	case n >= 3 && elems[n-2] == "manifests":
		return at(manifests, n-2)
	case n >= 3 && elems[n-2] == "blobs":
		return at(blobs, n-2)
	case n >= 3 && elems[n-2] == "referrers":
		return at(referrers, n-2)
	case n >= 3 && elems[n-2] == "tags" && elems[n-1] == "list":
		return apiPath{endpoint: tags, name: strings.Join(elems[:n-2], "/")}
	}
	if i := lastIndex(elems, "manifests"); i >= 1 {
		return at(manifests, i)
	}
	return apiPath{}
}

// lastIndex is the index of the last e in s, -1 if none.
func lastIndex(s []string, e string) int {
	for j := len(s) - 1; j >= 0; j-- {
		if s[j] == e {
			return j
		}
	}
	return -1
}

// label is the route of the path in logs and metrics. The upload paths
// lie under blobs/, and count as blob requests.
func (p apiPath) label() route.Label {
	switch p.endpoint {
	case base:
		return route.V2Base
	case manifests:
		return route.V2Manifest
	case blobs, uploads:
		return route.V2Blob
	}
	return route.V2Other
}

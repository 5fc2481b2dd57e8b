// Package server is the HTTP server as Nixery runs it, hardened against
// clients that are slow, stalled or too many: bounds on the request line
// and headers, on an unread request body, on an answer the client stops
// reading (counted from the last progress, so long blob downloads and
// build event streams are served to the end), and on the connections
// open at once. It knows nothing of what it serves.
package server

import (
	"io"
	"net/http"
	"strings"
	"time"
)

// HTTP server limits (docs/operating.md, "For the people who run it").
const (
	// readHeaderTimeout bounds how long a client may take to send its
	// request line and headers (slow-loris clients).
	readHeaderTimeout = 10 * time.Second
	// idleTimeout closes keep-alive connections that carry no request
	// for this long, so idle clients do not hold connections forever.
	idleTimeout = 120 * time.Second
	// maxHeaderBytes bounds the request line and headers together, and
	// so the URL: registry paths and search queries are far shorter.
	// Larger requests get 431 Request Header Fields Too Large.
	maxHeaderBytes = 64 << 10
	// maxStreams bounds the requests one HTTP/2 connection (TLS only)
	// carries at once, where HTTP/1.1 carries one: the connection cap
	// times this bounds the handlers. 100 is the least RFC 9113 §6.5.2
	// advises (Go's default is 250); a pull fetches a few layers at once.
	maxStreams = 100
)

// Limits on each request that net/http's own timeouts cannot express
// (docs/operating.md, "For the people who run it"). Its ReadTimeout and
// WriteTimeout count from the start of a request, so they would end long
// blob downloads and build event streams; worse, an expired ReadTimeout
// cancels the context of a handler still at work. These limits count
// from the last progress instead.
const (
	// bodyTimeout bounds how long a client may take to send a request
	// body after its headers. No endpoint uses a body, but net/http
	// reads up to 256 KiB of an unread one before it answers, with no
	// deadline of its own: a client that declares a body and never sends
	// it would hold its connection and handler for ever.
	bodyTimeout = 10 * time.Second
	// maxBodyBytes is how much of a body is read (and dropped) so that
	// the connection can serve another request; with a larger body, or
	// one not sent within bodyTimeout, the request is answered as usual
	// and the connection closed.
	maxBodyBytes = 64 << 10
	// writeStall: an answer that makes no progress for this long (one
	// write of at most stallChunk bytes not taken by the client) is
	// abandoned and its connection closed, so a client that stops
	// reading a blob or an event stream does not hold them for ever. A
	// slow client that keeps reading is served to the end.
	// stallChunk is 1 MiB, not less: each chunk is one write (sendfile)
	// with its own deadline, and 64 KiB chunks served a 1 MB layer 20 %
	// slower (bash scripts/bench-blob, docs/measurements.md).
	writeStall = 60 * time.Second
	stallChunk = 1 << 20
)

// limits are the limits above, for one server; zero fields take the
// defaults (tests shorten them).
type limits struct {
	BodyTimeout time.Duration
	WriteStall  time.Duration
}

// New is the server for h, with the limits above. Its ErrorLog and
// listener are the caller's (LimitConnections bounds the connections).
func New(h http.Handler) *http.Server { return newWith(h, limits{}) }

// newWith is the server with the limits above, l overriding them.
func newWith(h http.Handler, l limits) *http.Server {
	if l.BodyTimeout <= 0 {
		l.BodyTimeout = bodyTimeout
	}
	if l.WriteStall <= 0 {
		l.WriteStall = writeStall
	}
	return &http.Server{
		Handler:           l.wrap(h),
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		// HTTP/2 (with TLS): streams at once; a connection whose writes
		// make no progress for writeStall is closed, as a stalled
		// HTTP/1.1 answer is (each stream's writes have their own
		// deadline too, from wrap).
		HTTP2: &http.HTTP2Config{MaxConcurrentStreams: maxStreams, WriteByteTimeout: l.WriteStall},
	}
}

// wrap applies the limits to every request next handles.
func (l limits) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
			l.dropBody(w, r, rc)
		}
		// Each write sets its own deadline; none is left from the
		// previous request on this connection, and a handler may think
		// for minutes (a build) before it writes anything.
		rc.SetWriteDeadline(time.Time{})
		next.ServeHTTP(&stallWriter{ResponseWriter: w, rc: rc, stall: l.WriteStall}, r)
		// What the handler left buffered is sent after it returns.
		rc.SetWriteDeadline(time.Now().Add(l.WriteStall))
	})
}

// dropBody reads and drops the request body, within BodyTimeout and
// maxBodyBytes. A body that ended is replaced by an empty one and the
// read deadline lifted (net/http's background read for a client that
// goes away must not time out). Otherwise the deadline stays, so that
// whatever net/http still reads of the body is bounded too, and the
// connection is closed after the answer: the rest of the body must not
// be parsed as a request.
//
// A client that waits for 100 Continue (RFC 9110 §10.1.1) before it
// sends its body, as a push does, is not asked for it: it gets its
// answer (405) at once.
func (l limits) dropBody(w http.ResponseWriter, r *http.Request, rc *http.ResponseController) {
	rc.SetReadDeadline(time.Now().Add(l.BodyTimeout))
	if strings.EqualFold(r.Header.Get("Expect"), "100-continue") {
		w.Header().Set("Connection", "close")
		return
	}
	n, err := io.Copy(io.Discard, io.LimitReader(r.Body, maxBodyBytes+1))
	if err == nil && n <= maxBodyBytes {
		rc.SetReadDeadline(time.Time{})
		r.Body = http.NoBody
		return
	}
	w.Header().Set("Connection", "close")
}

// stallWriter gives every write of an answer writeStall to complete: a
// write deadline set before each chunk of at most stallChunk bytes, and
// before each flush.
type stallWriter struct {
	http.ResponseWriter
	rc    *http.ResponseController
	stall time.Duration
}

func (s *stallWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		s.rc.SetWriteDeadline(time.Now().Add(s.stall))
		m, err := s.ResponseWriter.Write(p[:min(len(p), stallChunk)])
		n += m
		if err != nil {
			return n, err
		}
		p = p[m:]
	}
	return n, nil
}

// ReadFrom copies src in chunks, each with its deadline, through the
// wrapped writer's ReadFrom (which may use sendfile). http.ServeContent
// hands it an *io.LimitedReader; chunks of it stay one LimitedReader of
// the same source, as sendfile needs.
func (s *stallWriter) ReadFrom(src io.Reader) (int64, error) {
	rf, ok := s.ResponseWriter.(io.ReaderFrom)
	if !ok {
		return io.Copy(struct{ io.Writer }{s}, src)
	}
	inner, remain := src, int64(-1)
	if lr, ok := src.(*io.LimitedReader); ok {
		inner, remain = lr.R, lr.N
	}
	var total int64
	for remain != 0 {
		chunk := int64(stallChunk)
		if remain > 0 {
			chunk = min(chunk, remain)
		}
		s.rc.SetWriteDeadline(time.Now().Add(s.stall))
		n, err := rf.ReadFrom(&io.LimitedReader{R: inner, N: chunk})
		total += n
		if remain > 0 {
			remain -= n
		}
		if err != nil {
			return total, err
		}
		if n < chunk { // the source ended
			break
		}
	}
	if lr, ok := src.(*io.LimitedReader); ok {
		lr.N = remain
	}
	return total, nil
}

func (s *stallWriter) Flush() {
	s.rc.SetWriteDeadline(time.Now().Add(s.stall))
	s.rc.Flush()
}

func (s *stallWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Package buildclient is the client side of `nixery build`: it follows a
// build's server-sent events (/api/build/<image>/events, the stream the
// web page shows) and shows them to a person, as one line per event for
// logs or as a progress bar redrawn in place on a terminal.
package buildclient

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/nixery/nixery/internal/builder"
	"github.com/nixery/nixery/internal/certs"
)

// Client is the HTTP client of a Nixery served over TLS with a
// certificate of its own CA and client certificates: with caFile, a PEM
// bundle, the server's certificate must be signed by one of its CAs
// (else by one the system trusts, or SSL_CERT_FILE names); with
// certFile and keyFile, the client presents that certificate.
func Client(caFile, certFile, keyFile string) (*http.Client, error) {
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("give both a client certificate and its key, or neither")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pool, err := certs.Bundle(caFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if certFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate %s and key %s: %w", certFile, keyFile, err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = cfg
	return &http.Client{Transport: t}, nil
}

// Follow reads the server-sent events at url with client (nil:
// http.DefaultClient) until the final one, passing each to show, and
// returns the final one. Credentials in url's user information are
// sent as HTTP Basic authentication (a private instance).
func Follow(ctx context.Context, client *http.Client, url string, show View) (builder.Event, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return builder.Event{}, err
	}
	req.Header.Set("Accept", "text/event-stream")
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return builder.Event{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		var e struct{ Error string }
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return builder.Event{}, errors.New(e.Error)
		}
		return builder.Event{}, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	events := readEvents(resp.Body)
	for {
		data, err := events()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("the server closed the event stream before the build ended")
			}
			return builder.Event{}, err
		}
		var e builder.Event
		if err := json.Unmarshal([]byte(data), &e); err != nil {
			return builder.Event{}, fmt.Errorf("bad event %q: %w", data, err)
		}
		show.Event(e)
		if e.Final() {
			return e, nil
		}
	}
}

// readEvents returns a function that reads the next event's data from a
// text/event-stream (fields other than data, and comments, are skipped).
// https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
func readEvents(r io.Reader) func() (string, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	return func() (string, error) {
		var data []string
		for sc.Scan() {
			line := sc.Text()
			if line == "" {
				if len(data) > 0 {
					return strings.Join(data, "\n"), nil
				}
				continue
			}
			if v, ok := strings.CutPrefix(line, "data:"); ok {
				data = append(data, strings.TrimPrefix(v, " "))
			}
		}
		if err := sc.Err(); err != nil {
			return "", err
		}
		return "", io.EOF
	}
}

// Signs reports whether the Nixery at base signs its images: whether it
// serves its public key at /cosign.pub. Any failure to tell is false.
func Signs(ctx context.Context, client *http.Client, base string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, base+"/cosign.pub", nil)
	if err != nil {
		return false
	}
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

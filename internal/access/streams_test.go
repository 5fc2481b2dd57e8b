package access_test

import (
	"context"
	"errors"
	"testing"

	"github.com/nixery/nixery/internal/access"
)

func TestStreams(t *testing.T) {
	s := &access.Streams{PerClient: 2, Total: 4}
	a, a64, b, c := ctxOf(t, "192.0.2.1:1"), ctxOf(t, "[2001:db8::1]:1"), ctxOf(t, "[2001:db8::2]:1"), ctxOf(t, "192.0.2.3:1")
	open := func(ctx any, wantErr string) func() {
		t.Helper()
		release, err := s.Open(ctx.(context.Context))
		var tm *access.TooManyStreamsError
		switch {
		case wantErr == "" && err != nil:
			t.Fatalf("refused: %v", err)
		case wantErr == "client" && (!errors.As(err, &tm) || !tm.PerClient || tm.Limit != 2):
			t.Fatalf("want the client's limit: %v", err)
		case wantErr == "server" && (!errors.As(err, &tm) || tm.PerClient || tm.Limit != 4):
			t.Fatalf("want the server's limit: %v", err)
		}
		return release
	}
	r1 := open(a, "")
	open(a, "")
	open(a, "client")
	// One IPv6 /64 is one client.
	r3 := open(a64, "")
	open(b, "")
	open(c, "server") // 4 open in all
	r1()
	r1()              // a second release changes nothing
	open(b, "client") // the /64 holds 2
	open(c, "")
	r3()
	open(a64, "")
}

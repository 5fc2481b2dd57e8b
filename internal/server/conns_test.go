package server

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// The connections open at once are bounded: with every slot taken, the
// next connection waits in the listen queue (Accept waits for a slot)
// and is served as soon as one closes.
func TestConnectionsBounded(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	full := make(chan struct{}, 1)
	lim := limitConnections(ln, 2)
	lim.full = func() {
		select {
		case full <- struct{}{}:
		default:
		}
	}
	srv := New(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	go srv.Serve(lim)
	t.Cleanup(func() { srv.Close() })

	ask := func(c net.Conn) error {
		c.SetDeadline(time.Now().Add(20 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
	var held []net.Conn
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := ask(c); err != nil { // accepted and served, kept alive
			t.Fatal(err)
		}
		held = append(held, c)
	}
	select {
	case <-full:
	case <-time.After(20 * time.Second):
		t.Fatal("with 2 of 2 connections open, Accept did not wait for a slot")
	}
	third, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	answered := make(chan error, 1)
	go func() { answered <- ask(third) }()
	held[0].Close()
	if err := <-answered; err != nil {
		t.Errorf("the waiting connection, once one closed: %v", err)
	}
}

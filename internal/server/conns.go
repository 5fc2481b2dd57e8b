package server

import (
	"io"
	"net"
	"sync"
	"syscall"
)

// MaxConnections is how many connections to keep open at once: half
// the file descriptors the process may open (a blob download takes two,
// its connection and the blob's file, and builds and storage need theirs),
// at most 16,384 (an idle connection costs tens of KiB). Go raises the
// soft limit to the hard one at start-up.
func MaxConnections() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == 0 {
		return 512
	}
	return int(min(max(rl.Cur/2, 64), 16384))
}

// limitedListener bounds the connections open at once: with every slot
// taken, Accept waits for a connection to close, and new clients wait in
// the kernel's listen queue. Without a bound, a flood of connections
// takes every file descriptor, and then builds and storage fail too.
type limitedListener struct {
	net.Listener
	slots chan struct{}
	done  chan struct{}
	once  sync.Once
	// full, if set, is called when Accept has to wait for a slot
	// (tests).
	full func()
}

// LimitConnections bounds the connections of ln open at once to n.
func LimitConnections(ln net.Listener, n int) net.Listener { return limitConnections(ln, n) }

func limitConnections(ln net.Listener, n int) *limitedListener {
	return &limitedListener{Listener: ln, slots: make(chan struct{}, n), done: make(chan struct{})}
}

func (l *limitedListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	default:
		if l.full != nil {
			l.full()
		}
		select {
		case l.slots <- struct{}{}:
		case <-l.done:
			return nil, net.ErrClosed
		}
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitedConn{Conn: c, release: sync.OnceFunc(func() { <-l.slots })}, nil
}

func (l *limitedListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// limitedConn gives its slot back when closed (once, however often).
type limitedConn struct {
	net.Conn
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}

// ReadFrom and CloseWrite keep what net/http uses of a TCP connection:
// sendfile for blobs, and the half-close before closing after an error.
func (c *limitedConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

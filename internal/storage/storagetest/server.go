package storagetest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nixery/nixery/internal/need"
)

// Server is a real storage server for tests: a process started from a
// binary that scripts/storage-servers built, listening on 127.0.0.1 only,
// with its data in a temporary directory. Stop and Start simulate an
// outage: the server comes back on the same port with the same data.
type Server struct {
	// Endpoint is the server's base URL, "http://127.0.0.1:<port>".
	Endpoint string
	// Bucket exists when the server is returned.
	Bucket string
	// AccessKey, SecretKey and Region are the S3 server's credentials.
	AccessKey, SecretKey, Region string

	t      testing.TB
	bin    string
	args   []string
	port   int
	cmd    *exec.Cmd
	exited chan error
	log    *bytes.Buffer
}

// BinDir is where the test servers are looked for: $NIXERY_TEST_SERVERS_BIN,
// else ${XDG_CACHE_HOME:-$HOME/.cache}/nixery-test-servers/bin (where
// scripts/storage-servers puts them).
func BinDir() string {
	if dir := os.Getenv("NIXERY_TEST_SERVERS_BIN"); dir != "" {
		return dir
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(cache, "nixery-test-servers", "bin")
}

// binary finds a server binary, or skips the test (fails it when
// NIXERY_REQUIRE_E2E is set, as in CI).
func binary(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(BinDir(), name)
	if _, err := os.Stat(p); err != nil {
		need.Skipf(t, "%s not found in %s: run scripts/storage-servers", name, BinDir())
	}
	return p
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// StartS3 starts versitygw (Apache-2.0) with its posix backend on a free
// 127.0.0.1 port, with a bucket named "nixery-test". It is stopped when
// the test ends.
func StartS3(t testing.TB) *Server {
	t.Helper()
	bin := binary(t, "versitygw")
	dir := t.TempDir()
	data, meta := filepath.Join(dir, "data"), filepath.Join(dir, "meta")
	for _, d := range []string{data, meta} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s := &Server{Bucket: "nixery-test", AccessKey: "nixery-test-key", SecretKey: "nixery-test-secret", Region: "us-east-1", t: t, bin: bin}
	s.port = freePort(t)
	s.Endpoint = fmt.Sprintf("http://127.0.0.1:%d", s.port)
	s.args = []string{
		"--port", fmt.Sprintf("127.0.0.1:%d", s.port),
		"--access", s.AccessKey, "--secret", s.SecretKey, "--region", s.Region,
		"--quiet",
		// Metadata in a side directory: no extended attributes needed.
		"posix", "--sidecar", meta, data,
	}
	// A bucket of the posix backend is a directory under the data root.
	if err := os.MkdirAll(filepath.Join(data, s.Bucket), 0o755); err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// StartGCS starts fake-gcs-server (BSD-2-Clause) with its filesystem
// backend on a free 127.0.0.1 port, with a bucket named "nixery-test". It
// is stopped when the test ends.
func StartGCS(t testing.TB) *Server {
	t.Helper()
	bin := binary(t, "fake-gcs-server")
	dir := t.TempDir()
	s := &Server{Bucket: "nixery-test", t: t, bin: bin}
	s.port = freePort(t)
	s.Endpoint = fmt.Sprintf("http://127.0.0.1:%d", s.port)
	s.args = []string{
		"-scheme", "http", "-host", "127.0.0.1", "-port", strconv.Itoa(s.port),
		"-backend", "filesystem", "-filesystem-root", filepath.Join(dir, "data"),
		"-public-host", fmt.Sprintf("127.0.0.1:%d", s.port),
		"-external-url", s.Endpoint,
		"-log-level", "error",
	}
	// A bucket of the filesystem backend is a directory under its root.
	if err := os.MkdirAll(filepath.Join(dir, "data", s.Bucket), 0o755); err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// StartRegistry starts go-containerregistry's registry (`crane registry
// serve`, Apache-2.0), in memory, on a free 127.0.0.1 port (clients name
// its images Addr()+"/name"). It has no referrers
// API: clients fall back to the referrers tag schema. It is stopped when
// the test ends.
func StartRegistry(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, bin: binary(t, "crane")}
	s.port = freePort(t)
	s.Endpoint = fmt.Sprintf("http://127.0.0.1:%d", s.port)
	s.args = []string{"registry", "serve", "--address", s.Addr()}
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// Addr is the server's address, "127.0.0.1:<port>".
func (s *Server) Addr() string { return fmt.Sprintf("127.0.0.1:%d", s.port) }

// Start starts the server (again) and waits until it accepts connections.
func (s *Server) Start() {
	s.t.Helper()
	if s.cmd != nil {
		return
	}
	s.log = new(bytes.Buffer)
	cmd := exec.Command(s.bin, s.args...)
	cmd.Stdout, cmd.Stderr = s.log, s.log
	cmd.Env = append(os.Environ(), "AWS_EC2_METADATA_DISABLED=true")
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("starting %s: %v", s.bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	s.cmd, s.exited = cmd, exited
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.port), time.Second)
		if err == nil {
			conn.Close()
			return
		}
		select {
		case err := <-exited:
			s.cmd, s.exited = nil, nil
			s.t.Fatalf("%s exited before listening: %v\n%s", filepath.Base(s.bin), err, s.log)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			s.t.Fatalf("%s did not listen on port %d within 30s\n%s", filepath.Base(s.bin), s.port, s.log)
		}
	}
}

// Stop kills the server (like a crash or a network outage: no goodbye)
// and waits for it to exit. Its data stays for the next Start.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.exited
	s.cmd, s.exited = nil, nil
}

// Pause freezes the server (SIGSTOP): connections are still accepted by
// the kernel but nothing answers, like a host that hangs.
func (s *Server) Pause() {
	if s.cmd != nil {
		s.cmd.Process.Signal(syscall.SIGSTOP)
	}
}

// Resume undoes Pause.
func (s *Server) Resume() {
	if s.cmd != nil {
		s.cmd.Process.Signal(syscall.SIGCONT)
	}
}

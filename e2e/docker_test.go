package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nixery/nixery/internal/need"
)

// TestDocker has the Docker engine, the client of the README's first
// commands, pull images from Nixery and run them: a tag, a nonroot
// image, an image by digest (both manifest media types), and an unknown
// package, whose message the user must see. The engine is a private
// dockerd of the test's own (see startDocker); its containers have no
// network, since it has no bridge.
func TestDocker(t *testing.T) {
	needServer(t)
	d := startDocker(t)
	reg := server.addr

	t.Run("PullAndRun", func(t *testing.T) {
		d.must(t, "pull", reg+"/shell/hello")
		if out := d.must(t, "run", "--rm", "--network", "none", reg+"/shell/hello", "hello"); out != "Hello, world!\n" {
			t.Errorf("docker run shell/hello hello printed %q", out)
		}
		// Without a command, the image's Cmd: hello's meta.mainProgram.
		if out := d.must(t, "run", "--rm", "--network", "none", reg+"/hello"); out != "Hello, world!\n" {
			t.Errorf("docker run hello printed %q", out)
		}
	})

	t.Run("NonRoot", func(t *testing.T) {
		d.must(t, "pull", reg+"/nonroot/shell/hello")
		out := d.must(t, "run", "--rm", "--network", "none", reg+"/nonroot/shell/hello",
			"bash", "-c", `id -u; echo "$HOME"; touch ~/x /tmp/y && echo ok`)
		if out != "65532\n/home/nonroot\nok\n" {
			t.Errorf("nonroot/shell/hello printed %q, want uid 65532, its home and ok", out)
		}
	})

	t.Run("ByDigest", func(t *testing.T) {
		// What the registry answers for each manifest media type.
		var digests []string
		for _, mt := range []string{
			"application/vnd.oci.image.manifest.v1+json",
			"application/vnd.docker.distribution.manifest.v2+json",
		} {
			resp, _ := get(t, "HEAD", "/v2/shell/hello/manifests/latest", mt)
			dg := resp.Header.Get("Docker-Content-Digest")
			if resp.StatusCode != 200 || !strings.HasPrefix(dg, "sha256:") {
				t.Fatalf("HEAD shell/hello as %s: %d, Docker-Content-Digest %q", mt, resp.StatusCode, dg)
			}
			digests = append(digests, dg)
		}
		// The digest Docker recorded for the tag it pulled is one of them.
		d.must(t, "pull", reg+"/shell/hello")
		repoDigest := strings.TrimSpace(d.must(t, "image", "inspect", "--format", "{{index .RepoDigests 0}}", reg+"/shell/hello"))
		if dg, ok := strings.CutPrefix(repoDigest, reg+"/shell/hello@"); !ok || !slices.Contains(digests, dg) {
			t.Errorf("docker's digest of shell/hello is %q; the registry answers %v", repoDigest, digests)
		}
		// Either manifest runs by digest; the one docker did not pull by
		// tag is pulled by digest now.
		for _, dg := range digests {
			if out := d.must(t, "run", "--rm", "--network", "none", reg+"/shell/hello@"+dg, "hello"); out != "Hello, world!\n" {
				t.Errorf("docker run shell/hello@%s hello printed %q", dg, out)
			}
		}
		recorded := d.must(t, "image", "inspect", "--format", "{{range .RepoDigests}}{{println .}}{{end}}", reg+"/shell/hello@"+digests[1])
		for _, dg := range digests {
			if !slices.Contains(strings.Fields(recorded), reg+"/shell/hello@"+dg) {
				t.Errorf("docker did not record %s for the image:\n%s", dg, recorded)
			}
		}
	})

	t.Run("UnknownPackage", func(t *testing.T) {
		packageListReady(t)
		stdout, stderr, err := d.docker(5*time.Minute, "pull", reg+"/shell/helo")
		if err == nil {
			t.Fatalf("docker pull shell/helo succeeded:\n%s%s", stdout, stderr)
		}
		if !strings.Contains(stdout+stderr, "unknown package(s): helo (did you mean hello?)") {
			t.Errorf("docker pull shell/helo (%v) does not show the registry's message:\n%s%s", err, stdout, stderr)
		}
	})
}

// dockerEngine is a dockerd started by a test, private to it, and the
// docker client's settings for talking to it.
type dockerEngine struct {
	env []string      // DOCKER_HOST, DOCKER_CONFIG
	log *lockedBuffer // dockerd's output
}

// docker runs the docker client against the engine; it returns the
// client's output and error, stdout and stderr apart.
func (d *dockerEngine) docker(timeout time.Duration, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Env = append(os.Environ(), d.env...)
	cmd.WaitDelay = 5 * time.Second
	var out, errs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errs
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (after %s)", ctx.Err(), timeout)
	}
	return out.String(), errs.String(), err
}

// must runs docker and returns its stdout, failing the test when the
// command fails, with the engine's and the server's logs.
func (d *dockerEngine) must(t *testing.T, args ...string) string {
	t.Helper()
	stdout, stderr, err := d.docker(5*time.Minute, args...)
	if err != nil {
		t.Fatalf("docker %s: %v\n%s%s\ndockerd log:\n%s\nserver log:\n%s", strings.Join(args, " "), err,
			stdout, stderr, tail(d.log.String(), 30), tail(server.log.String(), 30))
	}
	return stdout
}

// startDocker starts a private Docker engine for the test and stops it
// when the test ends. Everything of it lives in a directory of the
// test: its data, its state, its socket, the containerd it starts (as
// none is given; a system containerd at /run/containerd/containerd.sock
// would be used instead, in namespaces of this test's own), the docker
// client's configuration. The machine's Docker setup is neither read
// nor changed: an empty configuration file instead of
// /etc/docker/daemon.json; the key.json that Debian 12's engine writes
// into /etc/docker goes into the directory; no bridge, iptables rules or
// IP forwarding (dockerd would switch forwarding on for the host);
// containers in cgroups under a parent of this test's own, removed at
// the end. Only two empty directories stay, which the engine and
// containerd's shims make at fixed paths: /run/docker/plugins and
// /run/containerd/s. The registry on 127.0.0.1 needs no
// --insecure-registry: Docker trusts 127.0.0.0/8 over plain HTTP.
//
// env adds to dockerd's environment (a proxy).
//
// At the end, dockerd is stopped (it stops its containers and its
// containerd, and unmounts what it mounted), and the test fails if a
// process that names the directory outlives it, if anything under the
// directory is still mounted or if a container's cgroup is left; each
// is cleared.
func startDocker(t *testing.T, env ...string) *dockerEngine {
	t.Helper()
	dockerd := need.Tool(t, "dockerd")
	need.Tool(t, "docker")
	if os.Geteuid() != 0 {
		need.Skip(t, "the Docker engine needs root")
	}
	if !rootIsMountPoint(t) {
		// dockerd applies each layer in a mount namespace of its own
		// whose "/" it first makes a recursive slave, and runc enters a
		// container with pivot_root(2): both fail with EINVAL ("failed
		// to register layer: remount /, flags: 0x84000: invalid
		// argument") when the root is no mount point.
		need.Skip(t, "the Docker engine needs the root directory to be a mount point, and this process is in a chroot into a plain directory: bind-mount the directory onto itself before chroot")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "docker.sock")
	name := fmt.Sprintf("nixery-e2e-docker-%d", os.Getpid()) // of cgroups and containerd namespaces
	config := filepath.Join(dir, "daemon.json")
	if err := os.WriteFile(config, fmt.Appendf(nil, `{"deprecated-key-path": %q}`, filepath.Join(dir, "key.json")), 0o600); err != nil {
		t.Fatal(err)
	}
	d := &dockerEngine{
		env: []string{
			"DOCKER_HOST=unix://" + sock, "DOCKER_CONFIG=" + filepath.Join(dir, "client"),
			"DOCKER_CONTEXT=", "DOCKER_TLS_VERIFY=", "DOCKER_CERT_PATH=",
		},
		log: new(lockedBuffer),
	}
	cmd := exec.Command(dockerd,
		"--config-file", config,
		"--data-root", filepath.Join(dir, "data"),
		"--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "docker.pid"),
		"--host", "unix://"+sock,
		"--containerd-namespace", name,
		"--containerd-plugins-namespace", name+"-plugins",
		"--storage-driver", "vfs",
		"--bridge", "none",
		"--iptables=false", "--ip6tables=false", "--ip-forward=false", "--ip-masq=false",
		"--exec-opt", "native.cgroupdriver=cgroupfs",
		"--cgroup-parent", "/"+name,
	)
	cmd.Stdout, cmd.Stderr = d.log, d.log
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	// Should the test binary die, the engine stops rather than outlive it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(60 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Errorf("dockerd did not stop within 60s of SIGTERM; killed\n%s", tail(d.log.String(), 30))
		}
		clearProcesses(t, dir)
		clearMounts(t, dir)
		clearCgroups(t, name)
	})

	// Ready when the API answers on the socket.
	client := &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return new(net.Dialer).DialContext(ctx, "unix", sock)
		}},
	}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := client.Get("http://docker/_ping")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("dockerd did not answer on %s within 60s:\n%s", sock, tail(d.log.String(), 40))
		}
		select {
		case <-exited:
			t.Fatalf("dockerd exited at start-up:\n%s", tail(d.log.String(), 40))
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Logf("docker engine %s", strings.TrimSpace(d.must(t, "version", "--format", "{{.Server.Version}} (client {{.Client.Version}})")))
	return d
}

// rootIsMountPoint reports whether this process's root directory is a
// mount point; in a chroot into a plain directory it is not, and
// /proc/self/mountinfo lists nothing at "/".
func rootIsMountPoint(t *testing.T) bool {
	t.Helper()
	for _, m := range mountPoints(t) {
		if m == "/" {
			return true
		}
	}
	return false
}

// mountPoints lists the mount points of this process's mount namespace
// (within its root), as /proc/self/mountinfo shows them.
func mountPoints(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var points []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		// ID parent major:minor root mount-point options …
		if f := strings.Fields(sc.Text()); len(f) > 4 {
			points = append(points, unescapeMountinfo(f[4]))
		}
	}
	return points
}

// unescapeMountinfo undoes the octal escapes (\040 for a space …) of a
// path in /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// clearProcesses fails the test if, within 15 s, processes that name
// dir in their command line (containerd, its shims) still run once
// dockerd is gone, and kills them.
func clearProcesses(t *testing.T, dir string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		left := processesNaming(dir)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for pid, cmdline := range left {
				t.Errorf("still running after dockerd stopped: %d %s; killed", pid, cmdline)
				syscall.Kill(pid, syscall.SIGKILL)
			}
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// processesNaming returns the processes (pid → command line) that have
// dir or a path under it as an argument.
func processesNaming(dir string) map[int]string {
	entries, _ := os.ReadDir("/proc")
	found := map[int]string{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue // gone meanwhile
		}
		args := strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")
		if slices.ContainsFunc(args, func(a string) bool { return strings.Contains(a, dir) }) {
			found[pid] = strings.Join(args, " ")
		}
	}
	return found
}

// clearMounts fails the test if anything under dir is still mounted,
// and detaches it, deepest first, so that the directory can be removed.
func clearMounts(t *testing.T, dir string) {
	t.Helper()
	var left []string
	for _, m := range mountPoints(t) {
		if m == dir || strings.HasPrefix(m, dir+"/") {
			left = append(left, m)
		}
	}
	slices.Sort(left)
	slices.Reverse(left)
	for _, m := range left {
		t.Errorf("still mounted after dockerd stopped: %s", m)
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", m, err)
		}
	}
}

// clearCgroups removes the test's parent cgroup from every hierarchy
// (cgroup v1 has one per controller, v2 one in all); a container cgroup
// still inside it fails the test.
func clearCgroups(t *testing.T, parent string) {
	t.Helper()
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", parent))
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", parent)); err == nil {
		dirs = append(dirs, filepath.Join("/sys/fs/cgroup", parent))
	}
	for _, d := range dirs {
		children, _ := filepath.Glob(filepath.Join(d, "*", "cgroup.procs"))
		for _, c := range children {
			t.Errorf("container cgroup left after dockerd stopped: %s", filepath.Dir(c))
			syscall.Rmdir(filepath.Dir(c))
		}
		if err := syscall.Rmdir(d); err != nil {
			t.Errorf("removing the cgroup %s: %v", d, err)
		}
	}
}

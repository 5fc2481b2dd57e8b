package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ociConfig is what skopeo inspect --config prints of an image config.
type ociConfig struct {
	Config struct {
		User       string   `json:"User"`
		Env        []string `json:"Env"`
		Cmd        []string `json:"Cmd"`
		WorkingDir string   `json:"WorkingDir"`
	} `json:"config"`
}

// inspectConfig reads an image's config as a client sees it.
func inspectConfig(t *testing.T, name string) ociConfig {
	t.Helper()
	out := run(t, "skopeo", "inspect", "--tls-verify=false", "--config", "docker://"+server.addr+"/"+name)
	var cfg ociConfig
	if err := json.Unmarshal([]byte(out), &cfg); err != nil {
		t.Fatalf("skopeo inspect --config %s: %v\n%s", name, err, out)
	}
	return cfg
}

// runAs runs args (the image's Cmd when none) in rootfs with chroot, as
// a runtime would: with the config's environment and, if userspec is not
// empty, as that uid:gid. It returns the output and the error.
func runAs(t *testing.T, rootfs string, cfg ociConfig, userspec, stdin string, args ...string) (string, error) {
	t.Helper()
	if len(args) == 0 {
		args = cfg.Config.Cmd
	}
	chroot := []string{rootfs}
	if userspec != "" {
		chroot = []string{"--userspec=" + userspec, rootfs}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "chroot", append(chroot, args...)...)
	cmd.Env = cfg.Config.Env // nothing of this machine's environment
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// layerDigests lists the layer digests of an image's OCI manifest.
func layerDigests(t *testing.T, name string) []string {
	t.Helper()
	resp, body := get(t, "GET", "/v2/"+name+"/manifests/latest", "application/vnd.oci.image.manifest.v1+json")
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %d %s", name, resp.StatusCode, body)
	}
	var m struct {
		Layers []struct{ Digest string } `json:"layers"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	var ds []string
	for _, l := range m.Layers {
		ds = append(ds, l.Digest)
	}
	return ds
}

// TestNonRoot pulls nonroot/shell/hello and runs it as uid 65532: its
// home and /tmp are writable, the rest of the image is not, and the
// image shares every store-path layer with shell/hello.
func TestNonRoot(t *testing.T) {
	needServer(t)
	const name = "nonroot/shell/hello"
	cfg := inspectConfig(t, name)
	if c := cfg.Config; c.User != "65532:65532" || c.WorkingDir != "/home/nonroot" ||
		!slices.Contains(c.Env, "HOME=/home/nonroot") || !slices.Equal(c.Cmd, []string{"bash"}) {
		t.Errorf("config: %+v", c)
	}
	rootfs := pull(t, name)

	user := strings.TrimSpace(cfg.Config.User)
	out, err := runAs(t, rootfs, cfg, user, "", "bash", "-c",
		`id -u; id -g; id -un; echo "$HOME"; touch "$HOME/x" /tmp/y && echo wrote; stat -c '%u:%g %a' "$HOME" /tmp; hello`)
	want := "65532\n65532\nnonroot\n/home/nonroot\nwrote\n65532:65532 755\n0:0 1777\nHello, world!\n"
	if err != nil || out != want {
		t.Errorf("as %s: %v\n%s\nwant\n%s", user, err, out, want)
	}
	// Written by uid 65532 itself.
	for _, f := range []string{"home/nonroot/x", "tmp/y"} {
		info, err := os.Stat(filepath.Join(rootfs, f))
		if err != nil {
			t.Errorf("%s not written: %v", f, err)
		} else if st := info.Sys().(*syscall.Stat_t); st.Uid != 65532 || st.Gid != 65532 {
			t.Errorf("%s owned by %d:%d", f, st.Uid, st.Gid)
		}
	}
	// Unprivileged indeed: root's files and directories are not its own.
	for _, target := range []string{"/etc/passwd", "/root/x", "/x"} {
		if out, err := runAs(t, rootfs, cfg, user, "", "bash", "-c", "echo x >> "+target); err == nil {
			t.Errorf("uid 65532 could write %s: %s", target, out)
		}
	}
	// The image's own Cmd (bash) runs as the user too.
	if out, err := runAs(t, rootfs, cfg, user, "id -un\n"); err != nil || out != "nonroot\n" {
		t.Errorf("Cmd %q as %s: %v %q", cfg.Config.Cmd, user, err, out)
	}

	// Only the customisation layer differs from the root image's.
	root, nonroot := layerDigests(t, "shell/hello"), layerDigests(t, name)
	n := len(root)
	if len(nonroot) != n || !slices.Equal(root[:n-1], nonroot[:n-1]) || root[n-1] == nonroot[n-1] {
		t.Errorf("layers of shell/hello:\n%q\nof %s:\n%q\nwant the same but the last", root, name, nonroot)
	}
	if rc := inspectConfig(t, "shell/hello").Config; rc.User != "" || rc.WorkingDir != "" {
		t.Errorf("shell/hello config: %+v", rc)
	}
}

func TestNonRootNames(t *testing.T) {
	needServer(t)
	for _, name := range []string{"nonroot", "nonroot/arm64", "arm64/nonroot/nonroot"} {
		resp, body := get(t, "GET", "/v2/"+name+"/manifests/latest", "")
		if resp.StatusCode != 400 || !strings.Contains(string(body), "NAME_INVALID") || !strings.Contains(string(body), "names no packages") {
			t.Errorf("%s: %d %s", name, resp.StatusCode, body)
		}
	}
	// Any order of the leading meta-packages is the same image.
	a, b := layerDigests(t, "nonroot/shell/hello"), layerDigests(t, "shell/nonroot/hello")
	if !slices.Equal(a, b) {
		t.Errorf("shell/nonroot/hello differs from nonroot/shell/hello: %q, %q", b, a)
	}
}

// TestMainProgram: hello has no shell and names its program
// (meta.mainProgram), so its Cmd runs hello; as nonroot too.
func TestMainProgram(t *testing.T) {
	needServer(t)
	for _, tt := range []struct{ name, user string }{{"hello", ""}, {"nonroot/hello", "65532:65532"}} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := inspectConfig(t, tt.name)
			if cmd := cfg.Config.Cmd; len(cmd) != 1 || !strings.HasPrefix(cmd[0], "/nix/store/") || !strings.HasSuffix(cmd[0], "-hello-2.12.1/bin/hello") {
				t.Fatalf("Cmd %q, want hello's program", cmd)
			}
			if cfg.Config.User != tt.user {
				t.Errorf("User %q, want %q", cfg.Config.User, tt.user)
			}
			rootfs := pull(t, tt.name)
			if out, err := runAs(t, rootfs, cfg, tt.user, ""); err != nil || out != "Hello, world!\n" {
				t.Errorf("Cmd %q printed %q, %v", cfg.Config.Cmd, out, err)
			}
		})
	}
}

// TestGuarantees checks, one by one, what "What every image has"
// (docs/image-contents.md) promises, on real images: a shell image
// (shell/hello), one without a shell (hello), one with certificates
// (shell/cacert) and a nonroot one.
func TestGuarantees(t *testing.T) {
	needServer(t)
	type img struct {
		rootfs string
		cfg    ociConfig
	}
	images := map[string]img{}
	for _, name := range []string{"shell/hello", "hello", "shell/cacert", "nonroot/hello"} {
		images[name] = img{pull(t, name), inspectConfig(t, name)}
	}
	shell, bare, certs, nonroot := images["shell/hello"], images["hello"], images["shell/cacert"], images["nonroot/hello"]
	env := func(i img, name string) string {
		for _, e := range i.cfg.Config.Env {
			if v, ok := strings.CutPrefix(e, name+"="); ok {
				return v
			}
		}
		return ""
	}
	file := func(i img, name string) string {
		data, err := os.ReadFile(filepath.Join(i.rootfs, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
		return string(data)
	}

	t.Run("/tmp is 1777 in every image", func(t *testing.T) {
		for name, i := range images {
			info, err := os.Stat(filepath.Join(i.rootfs, "tmp"))
			if err != nil {
				t.Errorf("%s: /tmp: %v", name, err)
				continue
			}
			if !info.IsDir() || info.Mode()&os.ModePerm != 0o777 || info.Mode()&os.ModeSticky == 0 {
				t.Errorf("%s: /tmp %v", name, info.Mode())
			}
		}
		if out, err := runAs(t, shell.rootfs, shell.cfg, "65534:65534", "", "bash", "-c", "echo scratch > /tmp/nobody && cat /tmp/nobody"); err != nil || out != "scratch\n" {
			t.Errorf("nobody writing /tmp: %v %q", err, out)
		}
	})
	t.Run("passwd and group: root, nobody, and nonroot for nonroot", func(t *testing.T) {
		for name, i := range images {
			passwd, group := file(i, "etc/passwd"), file(i, "etc/group")
			if !strings.HasPrefix(passwd, "root:x:0:0:") || !strings.Contains(passwd, "\nnobody:x:65534:65534:") ||
				!strings.HasPrefix(group, "root:x:0:") || !strings.Contains(group, "\nnogroup:x:65534:") {
				t.Errorf("%s: passwd %q group %q", name, passwd, group)
			}
			if has := strings.Contains(passwd, "\nnonroot:x:65532:65532:") && strings.Contains(group, "\nnonroot:x:65532:"); has != (name == "nonroot/hello") {
				t.Errorf("%s: nonroot in passwd and group: %v", name, has)
			}
		}
		if out, err := runAs(t, shell.rootfs, shell.cfg, "", "", "bash", "-c", "id -un; id -u"); err != nil || out != "root\n0\n" {
			t.Errorf("id as root: %v %q", err, out)
		}
	})
	t.Run("/bin/sh when a shell is present", func(t *testing.T) {
		if out, err := runAs(t, shell.rootfs, shell.cfg, "", "", "/bin/sh", "-c", "echo via-sh"); err != nil || out != "via-sh\n" {
			t.Errorf("/bin/sh: %v %q", err, out)
		}
		if _, err := os.Lstat(filepath.Join(bare.rootfs, "bin/sh")); err == nil {
			t.Error("hello, without a shell, has /bin/sh")
		}
	})
	t.Run("/usr/bin/env when a package has env", func(t *testing.T) {
		if out, err := runAs(t, shell.rootfs, shell.cfg, "", "", "/usr/bin/env", "sh", "-c", "echo via-env"); err != nil || out != "via-env\n" {
			t.Errorf("/usr/bin/env: %v %q", err, out)
		}
	})
	t.Run("PATH", func(t *testing.T) {
		if p := env(shell, "PATH"); p != "/bin:/usr/bin" {
			t.Errorf("shell/hello PATH %q", p)
		}
		if p := env(bare, "PATH"); p != "/bin" {
			t.Errorf("hello PATH %q", p)
		}
		if out, err := runAs(t, shell.rootfs, shell.cfg, "", "", "bash", "-c", "hello"); err != nil || out != "Hello, world!\n" {
			t.Errorf("hello by PATH: %v %q", err, out)
		}
	})
	t.Run("certificates and SSL_CERT_FILE when a package has them", func(t *testing.T) {
		f := env(certs, "SSL_CERT_FILE")
		if f != "/etc/ssl/certs/ca-bundle.crt" || env(certs, "NIX_SSL_CERT_FILE") != f {
			t.Fatalf("env %q", certs.cfg.Config.Env)
		}
		out, err := runAs(t, certs.rootfs, certs.cfg, "", "", "bash", "-c", `cat "$SSL_CERT_FILE" /etc/ssl/certs/ca-certificates.crt`)
		if err != nil || strings.Count(out, "-----BEGIN CERTIFICATE-----") != 2 {
			t.Errorf("bundle: %v %q", err, out)
		}
		if env(shell, "SSL_CERT_FILE") != "" {
			t.Errorf("shell/hello has SSL_CERT_FILE: %q", shell.cfg.Config.Env)
		}
	})
	t.Run("Cmd: bash with a shell, else the main program", func(t *testing.T) {
		if !slices.Equal(shell.cfg.Config.Cmd, []string{"bash"}) {
			t.Errorf("shell/hello Cmd %q", shell.cfg.Config.Cmd)
		}
		if out, err := runAs(t, shell.rootfs, shell.cfg, "", "echo from-cmd\n"); err != nil || out != "from-cmd\n" {
			t.Errorf("shell/hello Cmd: %v %q", err, out)
		}
		if out, err := runAs(t, bare.rootfs, bare.cfg, "", ""); err != nil || out != "Hello, world!\n" {
			t.Errorf("hello Cmd %q: %v %q", bare.cfg.Config.Cmd, err, out)
		}
		if cmd := inspectConfig(t, "jq").Config.Cmd; cmd != nil {
			t.Errorf("jq (names no program) Cmd %q", cmd)
		}
	})
	t.Run("nonroot: User, HOME and WorkingDir", func(t *testing.T) {
		c := nonroot.cfg.Config
		if c.User != "65532:65532" || env(nonroot, "HOME") != "/home/nonroot" || c.WorkingDir != "/home/nonroot" {
			t.Errorf("config %+v", c)
		}
		info, err := os.Stat(filepath.Join(nonroot.rootfs, "home/nonroot"))
		if err != nil {
			t.Fatal(err)
		}
		if st := info.Sys().(*syscall.Stat_t); st.Uid != 65532 || st.Gid != 65532 || info.Mode().Perm() != 0o755 {
			t.Errorf("/home/nonroot: %d:%d %v", st.Uid, st.Gid, info.Mode())
		}
		for name, i := range images {
			if name != "nonroot/hello" && (i.cfg.Config.User != "" || env(i, "HOME") != "") {
				t.Errorf("%s: User %q HOME %q", name, i.cfg.Config.User, env(i, "HOME"))
			}
		}
	})
}

package nix

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseOptions(t *testing.T) {
	tests := []struct {
		in      string
		want    []Option
		wantErr string
	}{
		{in: "", want: nil},
		{in: "max-jobs = 0", want: []Option{{"max-jobs", "0"}}},
		{in: "builders = ssh://builder x86_64-linux; max-jobs = 0",
			want: []Option{{"builders", "ssh://builder x86_64-linux"}, {"max-jobs", "0"}}},
		// Nix's own ";" between machines stays in the value.
		{in: "builders = ssh://a x86_64-linux; ssh://b?ssh-key=/k aarch64-linux;max-jobs=0",
			want: []Option{{"builders", "ssh://a x86_64-linux; ssh://b?ssh-key=/k aarch64-linux"}, {"max-jobs", "0"}}},
		{in: "# remote builders\nbuilders = @/etc/nix/machines\n\n  substituters = https://a https://b  \nbuilders-use-substitutes = true\n",
			want: []Option{{"builders", "@/etc/nix/machines"}, {"substituters", "https://a https://b"}, {"builders-use-substitutes", "true"}}},
		{in: "substituters =", want: []Option{{"substituters", ""}}},
		{in: "a = b = c", want: []Option{{"a", "b = c"}}},
		{in: "max-jobs = 0;", want: []Option{{"max-jobs", "0;"}}},
		{in: "max-jobs 0", wantErr: `"max-jobs 0" is not name = value`},
		{in: "max-jobs = 0; ; cores = 1", want: []Option{{"max-jobs", "0;"}, {"cores", "1"}}},
		{in: "--store = /tmp", wantErr: `"--store" is not a Nix setting name`},
		{in: "= x", wantErr: `"" is not a Nix setting name`},
		{in: "max_jobs = 1", wantErr: `"max_jobs" is not a Nix setting name`},
		{in: "1x = 1", wantErr: `"1x" is not a Nix setting name`},
		{in: "a b = 1", wantErr: `"a b" is not a Nix setting name`},
		{in: "cores = 1\n-I = /etc", wantErr: `"-I" is not a Nix setting name`},
		{in: "max-jobs = 0; --store = /tmp/x", wantErr: `"--store" is not a Nix setting name`},
		{in: "max-jobs = 0;x y=1", want: []Option{{"max-jobs", "0;x y=1"}}},
		{in: "builders = user@b x86_64-linux /k 2; max-jobs=0", want: []Option{{"builders", "user@b x86_64-linux /k 2"}, {"max-jobs", "0"}}},
	}
	for _, tt := range tests {
		got, err := ParseOptions(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "NIXERY_NIX_OPTIONS") {
				t.Errorf("ParseOptions(%q) = %v, %v; want error %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("ParseOptions(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

// nixKey writes a key pair in Nix's format made with Go's ed25519, whose
// private keys are laid out as Nix's (seed, then public key).
func nixKey(t *testing.T, dir, name string) (secretFile, public string) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	secretFile = filepath.Join(dir, name+".sec")
	os.WriteFile(secretFile, []byte(name+":"+base64.StdEncoding.EncodeToString(priv)), 0o600)
	return secretFile, name + ":" + base64.StdEncoding.EncodeToString(pub)
}

func TestCacheCheck(t *testing.T) {
	dir := t.TempDir()
	sec, pub := nixKey(t, dir, "cache-1")
	_, otherPub := nixKey(t, t.TempDir(), "cache-1")
	otherName := "cache-2:" + strings.SplitN(pub, ":", 2)[1] // cache-1's key under another name
	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(garbage, []byte("not a key\n"), 0o600)
	missing := filepath.Join(dir, "secret-dir-name", "missing")

	tests := []struct {
		name    string
		c       Cache
		wantErr string
	}{
		{"none", Cache{}, ""},
		{"file", Cache{URL: "file:///srv/cache"}, ""},
		{"file with settings", Cache{URL: "file:///srv/cache?compression=zstd&parallel-compression=true"}, ""},
		{"s3", Cache{URL: "s3://nix-cache?region=eu-west-1"}, ""},
		{"https", Cache{URL: "https://user:token@cache.example.org/nix"}, ""},
		{"signed", Cache{URL: "file:///srv/cache", SecretKeyFile: sec, PublicKey: pub}, ""},
		{"relative file", Cache{URL: "file://srv/cache"}, "absolute directory"},
		{"no scheme", Cache{URL: "/srv/cache"}, "file://, s3://, http:// or https://"},
		{"ssh", Cache{URL: "ssh://builder"}, "file://, s3://, http:// or https://"},
		{"no host", Cache{URL: "https:///nix"}, "needs a host"},
		{"key in the URL", Cache{URL: "file:///srv/cache?secret-key=/k"}, "from NIXERY_NIX_CACHE_KEY"},
		{"keys without cache", Cache{SecretKeyFile: sec, PublicKey: pub}, "need NIXERY_NIX_CACHE"},
		{"secret key alone", Cache{URL: "file:///c", SecretKeyFile: sec}, "set both"},
		{"public key alone", Cache{URL: "file:///c", PublicKey: pub}, "set both"},
		{"bad public key", Cache{URL: "file:///c", SecretKeyFile: sec, PublicKey: "cache-1"}, "NIXERY_NIX_CACHE_PUBLIC_KEY"},
		{"short public key", Cache{URL: "file:///c", SecretKeyFile: sec, PublicKey: "cache-1:AAAA"}, "3 bytes"},
		{"missing key file", Cache{URL: "file:///c", SecretKeyFile: missing, PublicKey: pub}, "cannot be read: no such file"},
		{"not a key", Cache{URL: "file:///c", SecretKeyFile: garbage, PublicKey: pub}, "does not hold a secret key"},
		{"another key", Cache{URL: "file:///c", SecretKeyFile: sec, PublicKey: otherPub}, "is not the public key"},
		{"another name", Cache{URL: "file:///c", SecretKeyFile: sec, PublicKey: otherName}, "is not the public key"},
	}
	for _, tt := range tests {
		err := tt.c.Check()
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("%s: %v", tt.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: got %v, want %q", tt.name, err, tt.wantErr)
			continue
		}
		// Neither the key file nor credentials are named.
		for _, secret := range []string{dir, "token", "not a key"} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("%s: the error %q shows %q", tt.name, err, secret)
			}
		}
	}
	if s := (Cache{URL: "https://user:token@cache.example.org/nix"}).String(); strings.Contains(s, "token") {
		t.Errorf("String() = %q", s)
	}
}

func TestWithSetting(t *testing.T) {
	for _, tt := range []struct{ url, want string }{
		{"file:///c", "file:///c?k=/a%20b%26c%3Dd%2Be"},
		{"file:///c?compression=zstd", "file:///c?compression=zstd&k=/a%20b%26c%3Dd%2Be"},
		{"file:///c?", "file:///c?k=/a%20b%26c%3Dd%2Be"},
	} {
		if got := withSetting(tt.url, "k", "/a b&c=d+e"); got != tt.want {
			t.Errorf("withSetting(%q) = %q, want %q", tt.url, got, tt.want)
		}
	}
}

// recorder keeps the arguments of every Nix process a Runner starts and
// the lines and records it logs.
type recorder struct {
	mu    sync.Mutex
	args  [][]string
	lines []string
	log   bytes.Buffer
}

func (rec *recorder) runner(r *Runner) *Runner {
	r.started = func(cmd *exec.Cmd) { rec.mu.Lock(); rec.args = append(rec.args, cmd.Args); rec.mu.Unlock() }
	r.Log = func(l string) { rec.mu.Lock(); rec.lines = append(rec.lines, l); rec.mu.Unlock() }
	r.Logger = slog.New(slog.NewTextHandler(syncWriter{&rec.mu, &rec.log}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return r
}

// command returns the arguments of the first process whose arguments
// contain word, or nil.
func (rec *recorder) command(name, word string) []string {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, a := range rec.args {
		if a[0] == name && slices.Contains(a, word) {
			return a
		}
	}
	return nil
}

type syncWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// has reports whether args hold opt as consecutive arguments.
func has(args []string, opt ...string) bool {
	for i := range args {
		if slices.Equal(args[i:min(len(args), i+len(opt))], opt) {
			return true
		}
	}
	return false
}

// narinfo reads the cache's narinfo of a store path ("" if missing).
func narinfo(cache, path string) string {
	hash, _, _ := strings.Cut(strings.TrimPrefix(path, "/nix/store/"), "-")
	data, _ := os.ReadFile(filepath.Join(cache, hash+".narinfo"))
	return string(data)
}

// TestCachePush: with a cache, Nix is told to substitute from it (as a
// trusted store: no keys), the operator's options reach every Nix
// process, Nix takes them without complaint, and the closure lands in the
// cache.
func TestCachePush(t *testing.T) {
	req := demoSource(t, "hello")
	cache, tmp := filepath.Join(t.TempDir(), "cache"), t.TempDir()
	t.Setenv("TMPDIR", tmp)
	rec := &recorder{}
	r := rec.runner(&Runner{Timeout: time.Minute, Offline: true,
		Cache:   Cache{URL: "file://" + cache},
		Options: []Option{{"connect-timeout", "7"}, {"builders", ""}}})
	res, err := r.Build(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Packages(context.Background(), SearchRequest{SrcType: req.SrcType, SrcArgs: req.SrcArgs}); err != nil {
		t.Fatal(err)
	}
	if err := r.WaitPushes(context.Background()); err != nil {
		t.Fatal(err)
	}

	substitute := []string{"--option", "extra-substituters", "file://" + cache + "?trusted=1"}
	for _, cmd := range [][2]string{{"nix-build", "--expr"}, {"nix-instantiate", "--eval"}, {"nix", "path-info"}, {"nix-store", "--add-root"}, {"nix", "copy"}} {
		args := rec.command(cmd[0], cmd[1])
		if args == nil {
			t.Errorf("no %s %s ran", cmd[0], cmd[1])
			continue
		}
		if !has(args, "--option", "connect-timeout", "7") || !has(args, "--option", "builders", "") {
			t.Errorf("%s %s ran without the options: %q", cmd[0], cmd[1], args)
		}
		realises := cmd[0] == "nix-build" || cmd[0] == "nix-instantiate"
		if has(args, substitute...) != realises {
			t.Errorf("%s %s: substitutes from the cache %v, want %v: %q", cmd[0], cmd[1], !realises, realises, args)
		}
		if realises && slices.Index(args, "extra-substituters") < slices.Index(args, "substituters") {
			t.Errorf("%s: the cache comes before substituters = \"\", which would drop it: %q", cmd[0], args)
		}
	}
	if copy := rec.command("nix", "copy"); !has(copy, "--to", "file://"+cache) || !slices.Contains(copy, res.Roots[0]) {
		t.Errorf("nix copy %q", copy)
	}
	for _, l := range rec.lines {
		if strings.Contains(l, "unknown setting") || strings.Contains(l, "connect-timeout") {
			t.Errorf("Nix did not take the options: %s", l)
		}
	}
	for _, p := range res.Closure {
		if info := narinfo(cache, p.Path); !strings.Contains(info, "StorePath: "+p.Path) || strings.Contains(info, "Sig:") {
			t.Errorf("the cache's narinfo of %s: %q", p.Path, info)
		}
	}
	if s := r.Pushes(); s != (PushStats{Succeeded: 1}) {
		t.Errorf("pushes %+v", s)
	}
	var m bytes.Buffer
	r.WriteMetrics(&m)
	if !strings.Contains(m.String(), `nixery_nix_cache_pushes_total{result="succeeded"} 1`) {
		t.Errorf("metrics:\n%s", m.String())
	}
	if !strings.Contains(rec.log.String(), "pushed to the Nix binary cache") {
		t.Errorf("log:\n%s", rec.log.String())
	}
	// The push's own roots were there, and are gone with it.
	roots := rec.command("nix-store", "--add-root")
	procs := filepath.Join(tmp, "nixery-gcroots-"+strconv.Itoa(os.Getuid()), "proc-*")
	if i := slices.Index(roots, "--add-root"); i < 0 || !matches(procs+"/roots-*/root", roots[i+1]) {
		t.Errorf("the push's roots are not in this process's TMPDIR/nixery-gcroots-<uid>/proc-*: %q", roots)
	}
	if left, _ := filepath.Glob(procs + "/roots-*"); len(left) > 0 {
		t.Errorf("push directories left: %v", left)
	}

	// Without a cache, nothing of it.
	plain := &recorder{}
	if _, err := plain.runner(&Runner{Timeout: time.Minute}).Build(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if plain.command("nix", "copy") != nil || plain.command("nix-store", "--add-root") != nil || has(plain.command("nix-build", "--expr"), "--option", "extra-substituters") {
		t.Errorf("a Runner without a cache: %q", plain.args)
	}
}

// TestCachePushSigned: with a key made by Nix, pushed paths carry a
// signature that Nix verifies with the public key, and Nix is told to
// trust that key, not the store. The key file's path needs escaping in
// the store URL.
func TestCachePushSigned(t *testing.T) {
	req := demoSource(t, "hello")
	dir := filepath.Join(t.TempDir(), "keys & more")
	os.Mkdir(dir, 0o700)
	sec, pubFile := filepath.Join(dir, "secret key"), filepath.Join(dir, "public")
	if out, err := exec.Command("nix-store", "--generate-binary-cache-key", "nixery-test-1", sec, pubFile).CombinedOutput(); err != nil {
		t.Fatalf("generate key: %v\n%s", err, out)
	}
	pub, _ := os.ReadFile(pubFile)
	cache := filepath.Join(t.TempDir(), "cache")
	c := Cache{URL: "file://" + cache + "?compression=zstd", SecretKeyFile: sec, PublicKey: strings.TrimSpace(string(pub))}
	if err := c.Check(); err != nil {
		t.Fatalf("Check on Nix's own key pair: %v", err)
	}
	rec := &recorder{}
	r := rec.runner(&Runner{Timeout: time.Minute, Offline: true, Cache: c})
	res, err := r.Build(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.WaitPushes(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := r.Pushes(); s != (PushStats{Succeeded: 1}) {
		t.Fatalf("pushes %+v\n%s", s, rec.log.String())
	}
	build := rec.command("nix-build", "--expr")
	if !has(build, "--option", "extra-substituters", c.URL) || !has(build, "--option", "extra-trusted-public-keys", c.PublicKey) || strings.Contains(strings.Join(build, " "), "trusted=1") {
		t.Errorf("nix-build %q", build)
	}
	for _, p := range res.Closure {
		if info := narinfo(cache, p.Path); !strings.Contains(info, "Sig: nixery-test-1:") || !strings.Contains(info, "Compression: zstd") {
			t.Errorf("the cache's narinfo of %s: %q", p.Path, info)
		}
	}
	verify := func(key string) error {
		return exec.Command("nix", "--extra-experimental-features", "nix-command", "store", "verify", "--no-contents",
			"--store", "file://"+cache, "--option", "trusted-public-keys", key, "--recursive", res.Roots[0]).Run()
	}
	if err := verify(c.PublicKey); err != nil {
		t.Errorf("nix store verify with the public key: %v", err)
	}
	_, otherPub := nixKey(t, t.TempDir(), "nixery-test-1")
	if verify(otherPub) == nil {
		t.Error("nix store verify accepts another key: the check above proves nothing")
	}
}

// TestCachePushFails: a push that fails leaves the build alone, is
// counted, and neither its log nor its lines show the key file's path,
// which Nix's message names.
func TestCachePushFails(t *testing.T) {
	req := demoSource(t, "hello")
	dir := t.TempDir()
	sec, pub := nixKey(t, dir, "k-1")
	rec := &recorder{}
	r := rec.runner(&Runner{Timeout: time.Minute, Offline: true,
		Cache: Cache{URL: "file://" + filepath.Join(dir, "cache"), SecretKeyFile: sec, PublicKey: pub}})
	os.Remove(sec) // gone after start-up
	if _, err := r.Build(context.Background(), req); err != nil {
		t.Fatalf("the build failed with its push: %v", err)
	}
	if err := r.WaitPushes(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := r.Pushes(); s != (PushStats{Failed: 1}) {
		t.Errorf("pushes %+v", s)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	all := rec.log.String() + strings.Join(rec.lines, "\n")
	if strings.Contains(all, sec) || strings.Contains(all, filepath.Base(sec)) {
		t.Errorf("the key file's path is shown:\n%s", all)
	}
	// Nix 2.34 quotes the file with double quotes, earlier ones with single.
	quoted := strings.Contains(all, "opening file '"+hiddenMask+"'") || strings.Contains(all, `opening file "`+hiddenMask+`"`)
	if !quoted || !strings.Contains(rec.log.String(), "nix cache push failed") {
		t.Errorf("Nix's message about the key file, masked, is missing: the check above proves nothing:\n%s", all)
	}
}

// TestPushesBounded: at most maxPushes run and maxPushQueue wait; one
// more is skipped, not queued; WaitPushes waits for them all. Pushes are
// held in Nix's `started` hook until the test lets them go.
func TestPushesBounded(t *testing.T) {
	req := demoSource(t, "hello")
	res, err := (&Runner{Timeout: time.Minute}).Build(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(t.TempDir(), "cache")
	gate := make(chan struct{})
	var mu sync.Mutex
	copying := 0
	started := make(chan struct{}, maxPushes+maxPushQueue)
	r := &Runner{Timeout: time.Minute, Cache: Cache{URL: "file://" + cache}, Logger: slog.New(slog.DiscardHandler)}
	r.started = func(cmd *exec.Cmd) {
		if !slices.Contains(cmd.Args, "copy") {
			return
		}
		mu.Lock()
		copying++
		if copying > maxPushes {
			t.Errorf("%d pushes run at once", copying)
		}
		mu.Unlock()
		started <- struct{}{}
		<-gate
		mu.Lock()
		copying--
		mu.Unlock()
	}
	for range maxPushes + maxPushQueue + 1 {
		r.startPush(context.Background(), res.Roots)
	}
	if s := r.Pushes(); s != (PushStats{Skipped: 1}) {
		t.Errorf("pushes %+v, want one skipped", s)
	}
	for range maxPushes {
		<-started
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.WaitPushes(ctx); err == nil {
		t.Error("WaitPushes returned while pushes are held")
	}
	close(gate)
	if err := r.WaitPushes(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := r.Pushes(); s != (PushStats{Succeeded: maxPushes + maxPushQueue, Skipped: 1}) {
		t.Errorf("pushes %+v", s)
	}
	if info := narinfo(cache, res.Roots[0]); info == "" {
		t.Error("nothing pushed")
	}
}

func matches(pattern, name string) bool {
	ok, err := filepath.Match(pattern, name)
	return ok && err == nil
}

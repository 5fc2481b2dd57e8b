package nix

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nixery/nixery/internal/redact"
)

// Cache is a Nix binary cache that the replicas of a fleet share
// (NIXERY_NIX_CACHE): every Nix process that realises substitutes from
// it, and every realised closure is pushed to it with `nix copy`, so that
// a store path built by one replica is fetched, not built again, by the
// next. Its zero value is no cache.
//
// Signed or trusted: Nix accepts a substitute only if it is signed by a
// key in trusted-public-keys, or if the store it comes from is trusted
// (the store setting trusted=1). With SecretKeyFile and PublicKey, pushed
// paths are signed (the store setting secret-key of `nix copy --to`) and
// Nix is given PublicKey (extra-trusted-public-keys). Without keys, the
// substituter URL gets trusted=1, which trusts this one store and no other
// substituter — unlike require-sigs = false, which would trust every
// substituter unsigned. Anyone who can write to an unsigned cache can put
// programs into every image, so it is only for a cache nobody else can
// write.
type Cache struct {
	// URL is a binary cache store URL: file:///dir, s3://bucket?region=…
	// or http(s)://host/path, with the store's own settings, if any, as
	// its query (compression=zstd, parallel-compression=true …).
	URL string

	// SecretKeyFile, if set, is a file holding a secret key made by
	// `nix-store --generate-binary-cache-key` (or `nix key
	// generate-secret`); pushed paths are signed with it. Its path is
	// never logged or shown.
	SecretKeyFile string

	// PublicKey is the public key of SecretKeyFile ("name:base64"), which
	// Nix trusts for substitutes.
	PublicKey string
}

// shown is the cache URL as it may be logged: without credentials.
func (c Cache) shown() string { return redact.URLs(c.URL) }

// Signed reports whether pushed paths are signed.
func (c Cache) Signed() bool { return c.SecretKeyFile != "" }

// String is the cache as logs show it: its URL without credentials, and
// whether paths are signed.
func (c Cache) String() string {
	if c.URL == "" {
		return "none"
	}
	if c.Signed() {
		return c.shown() + " (signed)"
	}
	return c.shown() + " (unsigned, trusted)"
}

// Check validates the cache settings: a URL of a kind Nix can push to and
// substitute from, and either no keys or a matching pair (a secret key
// file that can be read and the public key that belongs to it; a fleet
// whose replicas sign with one key and trust another would push paths no
// replica accepts, and `nix copy` never re-signs a path the cache has).
// Its errors name the settings, never the key file's path or the URL's
// credentials.
func (c Cache) Check() error {
	if c.URL == "" {
		if c.SecretKeyFile != "" || c.PublicKey != "" {
			return errors.New("NIXERY_NIX_CACHE_KEY and NIXERY_NIX_CACHE_PUBLIC_KEY need NIXERY_NIX_CACHE")
		}
		return nil
	}
	if err := checkCacheURL(c.URL); err != nil {
		return fmt.Errorf("NIXERY_NIX_CACHE / --nix-cache %s: %w", c.shown(), err)
	}
	if (c.SecretKeyFile == "") != (c.PublicKey == "") {
		return errors.New("set both NIXERY_NIX_CACHE_KEY (signs what is pushed) and NIXERY_NIX_CACHE_PUBLIC_KEY (lets Nix trust it), or neither (an unsigned cache that nobody else can write)")
	}
	if c.SecretKeyFile == "" {
		return nil
	}
	pubName, pub, err := parseKey(c.PublicKey, ed25519.PublicKeySize)
	if err != nil {
		return fmt.Errorf("NIXERY_NIX_CACHE_PUBLIC_KEY / --nix-cache-public-key must be name:base64 as nix-store --generate-binary-cache-key writes it: %w", err)
	}
	data, err := os.ReadFile(c.SecretKeyFile)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // without the path
		}
		return fmt.Errorf("NIXERY_NIX_CACHE_KEY / --nix-cache-key cannot be read: %w", err)
	}
	secName, sec, err := parseKey(strings.TrimSpace(string(data)), ed25519.PrivateKeySize)
	if err != nil {
		return fmt.Errorf("NIXERY_NIX_CACHE_KEY / --nix-cache-key does not hold a secret key as nix-store --generate-binary-cache-key writes it: %w", err)
	}
	if secName != pubName || !ed25519.PrivateKey(sec).Public().(ed25519.PublicKey).Equal(ed25519.PublicKey(pub)) {
		return fmt.Errorf("NIXERY_NIX_CACHE_PUBLIC_KEY (%s) is not the public key of NIXERY_NIX_CACHE_KEY (key name %q): replicas would not trust what they push", pubName, secName)
	}
	return nil
}

// checkCacheURL accepts the binary cache URLs Nixery documents. The
// secret key has a setting of its own, which keeps its path out of a URL
// that is logged.
func checkCacheURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("is not a URL")
	}
	switch u.Scheme {
	case "file":
		if u.Host != "" || !filepath.IsAbs(u.Path) {
			return errors.New("a file:// cache needs an absolute directory: file:///path")
		}
	case "s3", "http", "https":
		if u.Host == "" {
			return fmt.Errorf("an %s:// cache needs a host (or bucket)", u.Scheme)
		}
	default:
		return errors.New("must be a file://, s3://, http:// or https:// URL")
	}
	if u.Query().Has("secret-key") {
		return errors.New("takes the secret key from NIXERY_NIX_CACHE_KEY, not from the URL")
	}
	return nil
}

// parseKey splits a Nix signing key, "name:base64", checking the length
// of its key data.
func parseKey(s string, size int) (name string, key []byte, err error) {
	name, b64, ok := strings.Cut(s, ":")
	if !ok || name == "" {
		return "", nil, errors.New("no key name")
	}
	key, err = base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return "", nil, errors.New("the key is not base64")
	}
	if len(key) != size {
		return "", nil, fmt.Errorf("the key has %d bytes, not %d", len(key), size)
	}
	return name, key, nil
}

// withSetting returns a store URL with one more store setting in its
// query. value is percent-encoded: Nix decodes store settings.
func withSetting(storeURL, name, value string) string {
	sep := "?"
	if strings.Contains(storeURL, "?") {
		sep = "&"
		if strings.HasSuffix(storeURL, "?") || strings.HasSuffix(storeURL, "&") {
			sep = ""
		}
	}
	return storeURL + sep + name + "=" + escapeSetting(value)
}

// escapeSetting percent-encodes everything but unreserved characters
// (RFC 3986 §2.3) and "/", so that a value holding "&", "=", "+" or a
// space stays one value.
func escapeSetting(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~/", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// substituteArgs are the options that make Nix substitute from the cache.
// They come after every other option: an extra- setting appends to the
// list whatever set it before (substituters = "" of Offline, or the
// operator's substituters).
func (c Cache) substituteArgs() []string {
	if c.URL == "" {
		return nil
	}
	if c.PublicKey == "" {
		return []string{"--option", "extra-substituters", withSetting(c.URL, "trusted", "1")}
	}
	return []string{"--option", "extra-substituters", c.URL, "--option", "extra-trusted-public-keys", c.PublicKey}
}

// pushURL is the store URL that `nix copy --to` writes to, signing with
// the secret key if there is one.
func (c Cache) pushURL() string {
	if c.SecretKeyFile == "" {
		return c.URL
	}
	return withSetting(c.URL, "secret-key", c.SecretKeyFile)
}

// hidden are the texts that must not leave a Nix process's output: the
// secret key file's path, as given and as it appears in the push URL.
func (c Cache) hidden() []string {
	if c.SecretKeyFile == "" {
		return nil
	}
	return []string{escapeSetting(c.SecretKeyFile), c.SecretKeyFile}
}

// hiddenMask replaces a hidden text in Nix's output.
const hiddenMask = "[NIXERY_NIX_CACHE_KEY]"

// Option is one Nix setting, as in nix.conf, that every Nix process gets
// as `--option Name Value` (NIXERY_NIX_OPTIONS).
type Option struct {
	Name, Value string
}

// optionNameRE is the shape of Nix setting names (max-jobs,
// extra-substituters): a name so shaped cannot be read as another
// command-line flag.
var optionNameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9-]*$`)

// nextOptionRE finds where a ";" starts the next option: at "word =",
// where the word may be any name (it is checked after the split, so that
// "; --store = x" is an error, not part of a value), but not a URL or a
// path: a machine of Nix's builders list ("ssh://b?ssh-key=/k x86_64-linux")
// may hold "=" too.
var nextOptionRE = regexp.MustCompile(`^\s*[^\s=;:/]+\s*=`)

// ParseOptions reads NIXERY_NIX_OPTIONS: Nix settings as in nix.conf,
// "name = value", one a line or separated by ";", such as
//
//	builders = ssh://builder x86_64-linux; max-jobs = 0
//
// A ";" that is not followed by another "name =" (or what tries to be one)
// belongs to the value, as
// in builders = ssh://a x86_64-linux; ssh://b aarch64-linux (Nix's own
// separator of machines). Blank lines and lines starting with "#" are
// skipped. Names are letters, digits and "-", starting with a letter;
// values are passed as one argument each, never through a shell.
func ParseOptions(s string) ([]Option, error) {
	var opts []Option
	for _, line := range strings.Split(s, "\n") {
		if t := strings.TrimSpace(line); t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		for _, entry := range splitEntries(line) {
			name, value, ok := strings.Cut(entry, "=")
			name, value = strings.TrimSpace(name), strings.TrimSpace(value)
			if !ok {
				return nil, fmt.Errorf("NIXERY_NIX_OPTIONS / --nix-options: %q is not name = value", strings.TrimSpace(entry))
			}
			if !optionNameRE.MatchString(name) {
				return nil, fmt.Errorf("NIXERY_NIX_OPTIONS / --nix-options: %q is not a Nix setting name (letters, digits and -, starting with a letter)", name)
			}
			opts = append(opts, Option{Name: name, Value: value})
		}
	}
	return opts, nil
}

// splitEntries splits one line at each ";" that is followed by "name =".
func splitEntries(line string) []string {
	var entries []string
	start := 0
	for i := 0; i < len(line); i++ {
		if line[i] == ';' && nextOptionRE.MatchString(line[i+1:]) {
			entries = append(entries, line[start:i])
			start = i + 1
		}
	}
	return append(entries, line[start:])
}

// optionArgs are the operator's options as command-line arguments.
func (r *Runner) optionArgs() []string {
	var args []string
	for _, o := range r.Options {
		args = append(args, "--option", o.Name, o.Value)
	}
	return args
}

const (
	// maxPushes is how many pushes run at once. A push is compression
	// (xz by default) and upload, which competes with builds for the
	// machine; two keep the cache filling without starving them.
	maxPushes = 2

	// maxPushQueue is how many more pushes may wait; beyond that, a push
	// is skipped (and counted): its paths are only not shared, and the
	// next build needing them pushes them.
	maxPushQueue = 16

	// DefaultPushTimeout bounds one push when the Runner has no Timeout.
	DefaultPushTimeout = 10 * time.Minute
)

// pushes is the state of the pushes to the cache: slots that bound them,
// and counters.
type pushes struct {
	once     sync.Once
	waitMu   sync.Mutex    // one WaitPushes at a time: two would each hold some tokens
	admitted chan struct{} // a token for each push admitted, running or waiting
	running  chan struct{} // a token for each push running

	succeeded, failed, skipped atomic.Int64
}

func (p *pushes) init() {
	p.once.Do(func() {
		p.admitted = make(chan struct{}, maxPushes+maxPushQueue)
		p.running = make(chan struct{}, maxPushes)
	})
}

// startPush pushes the closure of roots to the cache in the background.
//
// Why in the background: a push compresses and uploads the whole new
// closure, which can take as long as the build again; the client waiting
// for its image needs none of it, and a replica that dies before pushing
// only loses the sharing, which the next build of those paths (on any
// replica) makes up. So Build does not wait: the push overlaps with the
// closure query and the packing of the layers. It is bounded all the
// same: at most maxPushes run and maxPushQueue wait (more are skipped),
// each is limited by the Runner's Timeout (NIX_TIMEOUT) and stopped as a
// process group like every Nix process, and WaitPushes waits for them.
//
// The paths must survive a garbage collection (min-free) until they are
// pushed, which may be after the caller has removed its own roots
// (Request.RootDir): before returning, startPush registers roots of the
// push's own (nix-store --realise --add-root, indirect roots that go away
// with the directory), removed when the push ends.
func (r *Runner) startPush(ctx context.Context, roots []string) {
	p := &r.push
	p.init()
	log := r.logger().With("cache", r.Cache.shown())
	select {
	case p.admitted <- struct{}{}:
	default:
		p.skipped.Add(1)
		log.Warn("nix cache push skipped: too many pushes waiting", "pushes", cap(p.admitted))
		return
	}
	dir, removeDir, err := TempRoots()
	if err == nil {
		args := append(r.optionArgs(), "--realise", "--add-root", filepath.Join(dir, "root"))
		if err = r.run(ctx, io.Discard, nil, "nix-store", append(args, roots...)...); err != nil {
			removeDir()
		}
	}
	if err != nil {
		<-p.admitted
		p.failed.Add(1)
		log.Warn("nix cache push failed: cannot hold the paths", "err", err)
		return
	}
	// The push outlives Build and its caller's context on purpose (see
	// above), within its own limit.
	pushCtx := context.WithoutCancel(ctx)
	go func() {
		defer func() { <-p.admitted }()
		defer removeDir()
		p.running <- struct{}{}
		defer func() { <-p.running }()
		timeout := r.Timeout
		if timeout <= 0 {
			timeout = DefaultPushTimeout
		}
		ctx, cancel := context.WithTimeout(pushCtx, timeout)
		defer cancel()
		start := time.Now()
		// Options first, nix-command last: an operator's
		// experimental-features must not turn it off.
		args := append(r.optionArgs(), "--extra-experimental-features", "nix-command", "copy", "--to", r.Cache.pushURL())
		if err := r.run(ctx, io.Discard, r.Log, "nix", append(args, roots...)...); err != nil {
			p.failed.Add(1)
			log.Warn("nix cache push failed; the image is built, its paths are not shared", "roots", len(roots), "err", err)
			return
		}
		p.succeeded.Add(1)
		log.Info("pushed to the Nix binary cache", "roots", len(roots), "duration", time.Since(start).Round(time.Millisecond))
	}()
}

// WaitPushes waits until no push to the cache is running or waiting, or
// ctx ends: for a process about to exit (a one-off build, a replica
// shutting down) that wants its closures shared.
func (r *Runner) WaitPushes(ctx context.Context) error {
	p := &r.push
	p.init()
	p.waitMu.Lock()
	defer p.waitMu.Unlock()
	// Holding every admission token means no push is admitted; new pushes
	// are skipped meanwhile.
	held := 0
	defer func() {
		for range held {
			<-p.admitted
		}
	}()
	for held < cap(p.admitted) {
		select {
		case p.admitted <- struct{}{}:
			held++
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// PushStats counts pushes to the cache by result.
type PushStats struct {
	Succeeded, Failed, Skipped int64
}

// Pushes returns the counts of pushes so far.
func (r *Runner) Pushes() PushStats {
	p := &r.push
	return PushStats{Succeeded: p.succeeded.Load(), Failed: p.failed.Load(), Skipped: p.skipped.Load()}
}

// WriteMetrics writes the counts of pushes to the cache in the Prometheus
// text exposition format.
func (r *Runner) WriteMetrics(w io.Writer) {
	s := r.Pushes()
	fmt.Fprint(w, "# HELP nixery_nix_cache_pushes_total Closures pushed to the Nix binary cache (NIXERY_NIX_CACHE), by result.\n# TYPE nixery_nix_cache_pushes_total counter\n")
	for _, c := range []struct {
		result string
		n      int64
	}{{"succeeded", s.Succeeded}, {"failed", s.Failed}, {"skipped", s.Skipped}} {
		fmt.Fprintf(w, "nixery_nix_cache_pushes_total{result=%q} %d\n", c.result, c.n)
	}
}

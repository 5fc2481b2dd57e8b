// Package config reads Nixery's settings (flags, each with its environment
// variable, then defaults) into typed fields, with errors that say what to
// fix. It runs nothing: the package source it names is a value of package
// source, which resolves tags only when asked.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/nixery/nixery/internal/nix"
	"github.com/nixery/nixery/internal/source"
	"github.com/nixery/nixery/internal/storage"
)

// Config is everything `nixery serve` needs to know.
type Config struct {
	Host         string            // listen address (empty: all interfaces)
	Port         int               // listen port
	Source       source.Source     // package source; nil means the built-in demo set
	Backend      string            // storage backend: "filesystem", "gcs" or "s3"
	StoragePath  string            // root of the filesystem backend
	GCS          storage.GCSConfig // the gcs backend
	S3           storage.S3Config  // the s3 backend
	NixTimeout   time.Duration     // limit for one Nix build
	NixMinFree   int64             // Nix's min-free in bytes; 0: Nix's own setting
	NixMaxFree   int64             // Nix's max-free in bytes; 0: Nix's own setting
	NixCache     nix.Cache         // binary cache shared by replicas; zero: none
	NixOptions   []nix.Option      // further Nix settings for every Nix process
	LayerBudget  int               // maximum layers per image
	CacheTTL     time.Duration     // how long results from a moving source are reused
	SourceCheck  time.Duration     // between background resolutions of latest (and checks of a failing package set)
	MaxBuilds    int               // builds running at once
	BuildQueue   int               // builds waiting for a slot before 429
	DemoPath     string            // where the built-in demo package set is extracted
	LayerFormat  string            // "gzip" or "zstd"
	Compression  int               // compression level; 0 = the format's default
	Popularity   string            // URL or file of popularity data; "" for none
	GCInterval   time.Duration     // serve: collect garbage this often (one replica at a time); 0 = never
	GCMaxAge     time.Duration     // serve: what the in-process collection keeps
	LeaseTTL     time.Duration     // a replica's claim on a build lapses after this without renewal
	DrainTimeout time.Duration     // on SIGTERM, how long running builds may take to finish

	Htpasswd      string  // htpasswd file of a private instance; "" for none
	MetricsPublic bool    // with Htpasswd: /metrics needs no authentication
	TrustProxy    bool    // client addresses from X-Forwarded-For; shown host and scheme from X-Forwarded-Host/-Proto
	BuildRate     float64 // new builds a minute per client; 0 = unlimited
	BuildBurst    int     // new builds a client may start at once; 0 = the rate, rounded up

	TLSCert         string        // certificate file (PEM, the chain); with TLSKey, serve HTTPS only; "" for plain HTTP
	TLSKey          string        // its private key file (PEM)
	TLSReload       time.Duration // how often the two files are read again for a renewal
	TLSClientCA     string        // CA bundle client certificates must be signed by; "" for none
	TLSProbesPublic bool          // with TLSClientCA: /healthz and /readyz need no client certificate

	SigningKey          string // cosign private key file that signs every image and its documents; "" for unsigned
	SigningPasswordFile string // file holding its password; "" for the empty password
	PublicURL           string // the URL clients reach this instance at; "" for none known
}

// MinGCAge is the shortest age a collection may keep: pulls record their
// use in storage at most hourly (replicas serve warm images from memory),
// so a shorter age could collect an image that is being pulled.
const MinGCAge = 2 * time.Hour

// setting is one option: a flag with an environment variable of the same
// meaning. Environment variable names are those of the original Nixery
// where it had one.
type setting struct {
	flag, env, def, usage string
}

var settings = []setting{
	{"host", "NIXERY_HOST", "", "address to listen on (empty: all interfaces)"},
	{"port", "PORT", "8080", "port to listen on"},
	{"channel", "NIXERY_CHANNEL", "", "package source: a nixpkgs channel, branch or commit for the tag latest; other tags select other channels (nixos-24.11) or commits (needs network access to fetch nixpkgs)"},
	{"pkgs-repo", "NIXERY_PKGS_REPO", "", "package source: a git repository; the image tag selects a branch, tag or commit"},
	{"pkgs-path", "NIXERY_PKGS_PATH", "", "package source: a local directory holding a package set (default.nix)"},
	{"pkgs-flake", "NIXERY_PKGS_FLAKE", "", "package source: a flake reference (github:org/repo, git+https://host/repo, git+file:///srv/pkgs, path:/srv/pkgs); packages are its legacyPackages.<system>, then packages.<system>; for a flake in git the image tag selects a branch, tag or commit"},
	{"storage-backend", "NIXERY_STORAGE_BACKEND", "filesystem", "where images are stored: filesystem, gcs or s3"},
	{"storage-path", "STORAGE_PATH", "", "directory of the filesystem backend (default: $XDG_CACHE_HOME/nixery/storage, i.e. ~/.cache/nixery/storage)"},
	{"gcs-bucket", "GCS_BUCKET", "", "gcs: the bucket (credentials the standard Google way)"},
	{"gcs-prefix", "NIXERY_GCS_PREFIX", "", "gcs: key prefix, to share a bucket"},
	{"gcs-endpoint", "NIXERY_GCS_ENDPOINT", "", "gcs: base URL of an emulator such as fake-gcs-server (STORAGE_EMULATOR_HOST works too)"},
	{"gcs-signing-account", "GCS_SIGNING_ACCOUNT", "", "gcs: service account that signs redirect URLs"},
	{"gcs-signing-key", "GCS_SIGNING_KEY", "", "gcs: PEM private key file of that account"},
	{"s3-bucket", "NIXERY_S3_BUCKET", "", "s3: the bucket (credentials the standard AWS way)"},
	{"s3-prefix", "NIXERY_S3_PREFIX", "", "s3: key prefix, to share a bucket"},
	{"s3-region", "NIXERY_S3_REGION", "", "s3: region (default: AWS_REGION / the AWS configuration, else us-east-1)"},
	{"s3-endpoint", "NIXERY_S3_ENDPOINT", "", "s3: base URL of an S3-compatible service (empty: AWS)"},
	{"s3-path-style", "NIXERY_S3_PATH_STYLE", "false", "s3: address buckets as endpoint/bucket (most S3-compatible services need it)"},
	{"blob-redirect", "NIXERY_BLOB_REDIRECT", "true", "gcs/s3: redirect blob downloads to short-lived signed URLs (false: serve them through Nixery)"},
	{"redirect-ttl", "NIXERY_REDIRECT_TTL", "600", "gcs/s3: seconds a signed URL stays valid"},
	{"storage-timeout", "NIXERY_STORAGE_TIMEOUT", "10", "gcs/s3: seconds one storage request may wait before it fails (503, retryable)"},
	{"nix-timeout", "NIX_TIMEOUT", "60", "seconds one Nix build may take before it is killed"},
	{"nix-min-free", "NIXERY_NIX_MIN_FREE", "", "bytes (or with a K, M, G or T suffix): when the Nix store's disk has less free during a build, Nix collects garbage (what builds in progress hold stays) (default: Nix's min-free)"},
	{"nix-max-free", "NIXERY_NIX_MAX_FREE", "", "bytes (or with a K, M, G or T suffix): the free space at which that garbage collection stops (default: Nix's max-free)"},
	{"nix-cache", "NIXERY_NIX_CACHE", "", "a Nix binary cache (file:///dir, s3://bucket?region=…, http(s)://…) that Nix substitutes from and every build's closure is pushed to (nix copy, in the background), so that replicas share Nix's work; without the two keys it is trusted unsigned: only for a cache nobody else can write"},
	{"nix-cache-key", "NIXERY_NIX_CACHE_KEY", "", "secret key file (nix-store --generate-binary-cache-key) that signs what is pushed to --nix-cache; needs --nix-cache-public-key"},
	{"nix-cache-public-key", "NIXERY_NIX_CACHE_PUBLIC_KEY", "", "the public key of --nix-cache-key (name:base64): Nix trusts paths from the cache signed by it"},
	{"nix-options", "NIXERY_NIX_OPTIONS", "", "further Nix settings for every Nix process, as in nix.conf: name = value, one a line or separated by ';' (e.g. 'builders = ssh://builder x86_64-linux; max-jobs = 0'); they win over Nixery's own"},
	{"layer-budget", "NIXERY_LAYER_BUDGET", "100", "maximum number of layers in an image"},
	{"layer-format", "NIXERY_LAYER_FORMAT", "gzip", "layer compression: gzip, or zstd for clients that support it"},
	{"compression-level", "NIXERY_COMPRESSION_LEVEL", "", "compression level (gzip 1-9, zstd 1-22; default: gzip 6, zstd 3)"},
	{"popularity", "NIX_POPULARITY_URL", "", "URL or file of package popularity data (JSON: store path name → count), which lets layering share more"},
	{"source-check-interval", "NIXERY_SOURCE_CHECK_INTERVAL", "60", "seconds (1-3600) between background resolutions of the tag latest; while Nix cannot evaluate the package set latest selects (new images then fail at once with 503), also between its checks"},
	{"cache-ttl", "NIXERY_CACHE_TTL", "300", "seconds an image from a moving source (a channel or branch name, a directory) is reused before it is rebuilt; images from a commit are kept"},
	{"max-builds", "NIXERY_MAX_BUILDS", "", "builds that run at once (default: number of cores)"},
	{"build-queue", "NIXERY_BUILD_QUEUE", "64", "builds that may wait for a slot; beyond that, clients get 429 TOOMANYREQUESTS"},
	{"gc-interval", "NIXERY_GC_INTERVAL", "", "collect garbage in-process this often, e.g. 24h (one replica at a time, by a lease in storage; empty: never, use nixery gc)"},
	{"build-lease-ttl", "NIXERY_BUILD_LEASE_TTL", "30", "seconds (at most 600) a replica's lease on a build lives without renewal; then another replica takes the build over (kill -9, a lost node)"},
	{"drain-timeout", "NIXERY_DRAIN_TIMEOUT", "25", "on SIGTERM: seconds the builds running may take to finish (no new ones start; /readyz answers 503 at once); the rest are taken over by other replicas"},
	{"gc-max-age", "NIXERY_GC_MAX_AGE", "720h", "the in-process collection deletes images nobody built or pulled within this age (at least 2h)"},
	{"htpasswd", "NIXERY_HTPASSWD", "", "private instance: an htpasswd file of bcrypt entries (htpasswd -B); pages, APIs and the registry then need one of its users (HTTP Basic); re-read when it changes"},
	{"metrics-public", "NIXERY_METRICS_PUBLIC", "false", "with --htpasswd: serve /metrics without authentication (/healthz and /readyz always are)"},
	{"trust-proxy", "NIXERY_TRUST_PROXY", "false", "take the client's address from the last X-Forwarded-For entry, and the host and scheme that pages show in pull commands from X-Forwarded-Host and X-Forwarded-Proto (only behind a reverse proxy that sets them)"},
	{"build-rate", "NIXERY_BUILD_RATE", "0", "new builds one client (user, else IP address; IPv6 by /64) may start per minute, e.g. 2 or 0.5; 0: unlimited; over it, 429 TOOMANYREQUESTS with Retry-After"},
	{"build-burst", "NIXERY_BUILD_BURST", "", "new builds one client may start at once (default: the build rate, rounded up)"},
	{"tls-cert", "NIXERY_TLS_CERT", "", "serve HTTPS only (HTTP/2 and HTTP/1.1, TLS 1.2 at least) with this certificate file (PEM: the certificate, then its intermediates); needs --tls-key; both files are read again when they change (a renewal), without a restart"},
	{"tls-key", "NIXERY_TLS_KEY", "", "the private key file (PEM) of --tls-cert"},
	{"tls-reload-interval", "NIXERY_TLS_RELOAD_INTERVAL", "30", "seconds (1-3600) between reads of --tls-cert and --tls-key for a renewed pair"},
	{"tls-client-ca", "NIXERY_TLS_CLIENT_CA", "", "with --tls-cert: a CA bundle (PEM); every client must present a certificate signed by it (with --htpasswd, and a user too)"},
	{"tls-probes-public", "NIXERY_TLS_PROBES_PUBLIC", "false", "with --tls-client-ca: /healthz and /readyz need no client certificate (for a load balancer's probes)"},
	{"signing-key", "NIXERY_SIGNING_KEY", "", "a cosign private key file (cosign generate-key-pair): every image, its SBOMs and its provenance are signed, for cosign verify --key (the public key is served at /cosign.pub)"},
	{"signing-password-file", "NIXERY_SIGNING_PASSWORD_FILE", "", "a file holding the password of --signing-key (none: the empty password)"},
	{"public-url", "NIXERY_PUBLIC_URL", "", "the URL clients reach this instance at (https://nixery.example.com): provenance names it as the builder (default: nixery://<host name>)"},
}

// parser reads numbers and switches from settings, remembering the first
// error, whose message names the variable and the flag.
type parser struct {
	get func(flag string) string
	err error
}

func envOf(flag string) string {
	for _, s := range settings {
		if s.flag == flag {
			return s.env
		}
	}
	return ""
}

// number reads a whole number from min to max (max < 0: no upper bound);
// hint is added to the error message.
func (p *parser) number(flag string, min, max int, hint string) int {
	v := p.get(flag)
	n, err := strconv.Atoi(v)
	if err == nil && n >= min && (max < 0 || n <= max) {
		return n
	}
	if p.err == nil {
		bounds := fmt.Sprintf("from %d to %d", min, max)
		if max < 0 {
			bounds = fmt.Sprintf("of at least %d", min)
		}
		p.err = fmt.Errorf("%s / --%s must be a whole number %s%s, not %q", envOf(flag), flag, bounds, hint, v)
	}
	return 0
}

// seconds reads a whole number of seconds, at least min.
func (p *parser) seconds(flag string, min int) time.Duration {
	return time.Duration(p.number(flag, min, -1, " (seconds)")) * time.Second
}

// duration reads a Go duration (90m, 24h) of at least min; empty is 0
// when allowEmpty.
func (p *parser) duration(flag string, min time.Duration, allowEmpty bool) time.Duration {
	v := p.get(flag)
	if v == "" && allowEmpty {
		return 0
	}
	d, err := time.ParseDuration(v)
	if err == nil && d >= min {
		return d
	}
	if p.err == nil {
		p.err = fmt.Errorf("%s / --%s must be a duration of at least %s such as 24h, not %q", envOf(flag), flag, min, v)
	}
	return 0
}

// size reads a number of bytes, at least 1, with an optional K, M, G or
// T suffix (powers of 1024, as Nix's own sizes); "" is 0.
func (p *parser) size(flag string) int64 {
	v := p.get(flag)
	if v == "" {
		return 0
	}
	digits, shift := v, 0
	if i := strings.IndexByte("KMGT", strings.ToUpper(v[len(v)-1:])[0]); i >= 0 {
		digits, shift = v[:len(v)-1], 10*(i+1)
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err == nil && n >= 1 && n <= math.MaxInt64>>shift {
		return n << shift
	}
	if p.err == nil {
		p.err = fmt.Errorf("%s / --%s must be a number of bytes of at least 1, with an optional K, M, G or T suffix (e.g. 10G), not %q", envOf(flag), flag, v)
	}
	return 0
}

// decimal reads a non-negative decimal number.
func (p *parser) decimal(flag string) float64 {
	v := p.get(flag)
	f, err := strconv.ParseFloat(v, 64)
	if err == nil && f >= 0 && !math.IsInf(f, 0) {
		return f
	}
	if p.err == nil {
		p.err = fmt.Errorf("%s / --%s must be a number of at least 0, not %q", envOf(flag), flag, v)
	}
	return 0
}

// boolean reads true or false.
func (p *parser) boolean(flag string) bool {
	b, err := strconv.ParseBool(p.get(flag))
	if err != nil && p.err == nil {
		p.err = fmt.Errorf("%s / --%s must be true or false, not %q", envOf(flag), flag, p.get(flag))
	}
	return b
}

// boolString is a flag that may be given alone (true) or with a value,
// checked later with the other settings.
type boolString struct{ s string }

func (b *boolString) String() string     { return b.s }
func (b *boolString) Set(v string) error { b.s = v; return nil }
func (b *boolString) IsBoolFlag() bool   { return true }

// Usage writes the help text for the settings.
func Usage(w io.Writer) {
	// Columns as wide as the longest flag and variable.
	fw, ew := 0, 0
	for _, s := range settings {
		fw, ew = max(fw, len(s.flag)), max(ew, len(s.env))
	}
	for _, s := range settings {
		def := ""
		if s.def != "" {
			def = fmt.Sprintf(" (default %s)", s.def)
		}
		fmt.Fprintf(w, "  --%-*s $%-*s %s%s\n", fw, s.flag, ew, s.env, s.usage, def)
	}
	fmt.Fprintln(w, "\nWithout a package source, Nixery serves its built-in offline demo package set.")
}

// Load reads the configuration from command-line arguments, falling back
// to the environment, then to defaults. A flag wins over its variable.
// Errors say what to fix.
func Load(args []string, getenv func(string) string) (*Config, error) {
	fs := flag.NewFlagSet("nixery serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	load := Settings(fs, getenv)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return load()
}

// Settings registers every setting of serve on fs, each with its
// environment variable as the default and named in its usage line, and
// returns the function that reads the parsed flags into a Config (call
// it after fs.Parse). Every subcommand that opens storage or runs Nix
// (serve, gc, build --local) takes the same settings this way, and its
// --help lists them from the same table.
func Settings(fs *flag.FlagSet, getenv func(string) string) func() (*Config, error) {
	values := map[string]*string{}
	for _, s := range settings {
		v := getenv(s.env)
		if v == "" {
			v = s.def
		}
		usage := s.usage + " ($" + s.env + ")"
		if s.def == "true" || s.def == "false" {
			// A switch: "--s3-path-style" alone means true.
			b := &boolString{v}
			fs.Var(b, s.flag, usage)
			values[s.flag] = &b.s
			continue
		}
		values[s.flag] = fs.String(s.flag, v, usage)
	}
	return func() (*Config, error) { return fromFlags(values, getenv) }
}

// fromFlags makes the Config from the settings' values.
func fromFlags(values map[string]*string, getenv func(string) string) (*Config, error) {
	get := func(name string) string { return strings.TrimSpace(*values[name]) }
	p := parser{get: get}

	c := &Config{Host: get("host"), Backend: get("storage-backend"), StoragePath: get("storage-path")}
	c.Port = p.number("port", 1, 65535, "")
	c.NixTimeout = p.seconds("nix-timeout", 1)
	c.NixMinFree, c.NixMaxFree = p.size("nix-min-free"), p.size("nix-max-free")
	c.LayerBudget = p.number("layer-budget", 2, 125, " (one layer is the customisation layer; many runtimes refuse more than 125 layers)")
	c.CacheTTL = p.seconds("cache-ttl", 0)
	c.SourceCheck = time.Duration(p.number("source-check-interval", 1, 3600, " (seconds)")) * time.Second
	c.MaxBuilds = runtime.NumCPU()
	if get("max-builds") != "" {
		c.MaxBuilds = p.number("max-builds", 1, -1, "")
	}
	c.BuildQueue = p.number("build-queue", 0, -1, "")
	c.LayerFormat, c.Popularity = get("layer-format"), get("popularity")
	if c.LayerFormat != "gzip" && c.LayerFormat != "zstd" {
		return nil, fmt.Errorf("NIXERY_LAYER_FORMAT / --layer-format must be gzip or zstd, not %q", c.LayerFormat)
	}
	if get("compression-level") != "" {
		max := 9
		if c.LayerFormat == "zstd" {
			max = 22
		}
		c.Compression = p.number("compression-level", 1, max, " for "+c.LayerFormat)
	}
	// At most 600 s: a claim is renewed every third of it, and garbage
	// collection deletes claims not written for 2 × metadata.LeaseTTL
	// (20 minutes) as those of dead replicas.
	c.LeaseTTL = time.Duration(p.number("build-lease-ttl", 1, 600, " (seconds)")) * time.Second
	c.DrainTimeout = p.seconds("drain-timeout", 0)
	c.GCInterval = p.duration("gc-interval", time.Hour, true)
	c.GCMaxAge = p.duration("gc-max-age", MinGCAge, false)
	c.Htpasswd = get("htpasswd")
	c.MetricsPublic, c.TrustProxy = p.boolean("metrics-public"), p.boolean("trust-proxy")
	c.BuildRate = p.decimal("build-rate")
	if get("build-burst") != "" {
		c.BuildBurst = p.number("build-burst", 1, -1, "")
	}
	c.TLSCert, c.TLSKey, c.TLSClientCA = get("tls-cert"), get("tls-key"), get("tls-client-ca")
	c.TLSReload = time.Duration(p.number("tls-reload-interval", 1, 3600, " (seconds)")) * time.Second
	c.TLSProbesPublic = p.boolean("tls-probes-public")
	c.SigningKey, c.SigningPasswordFile, c.PublicURL = get("signing-key"), get("signing-password-file"), get("public-url")
	redirect, pathStyle := p.boolean("blob-redirect"), p.boolean("s3-path-style")
	redirectTTL, timeout := p.seconds("redirect-ttl", 1), p.seconds("storage-timeout", 1)
	if p.err != nil {
		return nil, p.err
	}
	var err error
	if c.NixOptions, err = nix.ParseOptions(*values["nix-options"]); err != nil {
		return nil, err
	}
	c.NixCache = nix.Cache{URL: get("nix-cache"), SecretKeyFile: get("nix-cache-key"), PublicKey: get("nix-cache-public-key")}
	if c.NixCache.SecretKeyFile != "" {
		// Absolute, as it is masked wherever Nix's messages repeat it.
		if c.NixCache.SecretKeyFile, err = filepath.Abs(c.NixCache.SecretKeyFile); err != nil {
			return nil, err
		}
	}
	if err := c.NixCache.Check(); err != nil {
		return nil, err
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return nil, errors.New("set both NIXERY_TLS_CERT / --tls-cert and NIXERY_TLS_KEY / --tls-key, or neither")
	}
	if c.TLSClientCA != "" && c.TLSCert == "" {
		return nil, errors.New("NIXERY_TLS_CLIENT_CA / --tls-client-ca needs NIXERY_TLS_CERT / --tls-cert and NIXERY_TLS_KEY / --tls-key: client certificates come with TLS")
	}
	if c.SigningPasswordFile != "" && c.SigningKey == "" {
		return nil, errors.New("NIXERY_SIGNING_PASSWORD_FILE / --signing-password-file needs NIXERY_SIGNING_KEY / --signing-key: it is the key's password")
	}
	if c.PublicURL != "" {
		if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
			return nil, errors.New("NIXERY_PUBLIC_URL / --public-url: want http(s)://host[:port][/path], without credentials")
		}
	}
	if c.NixMinFree > 0 && c.NixMaxFree > 0 && c.NixMaxFree < c.NixMinFree {
		return nil, fmt.Errorf("NIXERY_NIX_MAX_FREE / --nix-max-free (%d bytes) must not be below NIXERY_NIX_MIN_FREE / --nix-min-free (%d bytes): garbage collection starts below min-free and stops at max-free", c.NixMaxFree, c.NixMinFree)
	}

	var sources []string
	for _, name := range []string{"channel", "pkgs-repo", "pkgs-path", "pkgs-flake"} {
		if get(name) != "" {
			sources = append(sources, name)
		}
	}
	if len(sources) > 1 {
		return nil, fmt.Errorf("set only one package source, not %s: NIXERY_CHANNEL (--channel), NIXERY_PKGS_REPO (--pkgs-repo), NIXERY_PKGS_PATH (--pkgs-path) or NIXERY_PKGS_FLAKE (--pkgs-flake)", strings.Join(sources, " and "))
	}
	switch {
	case get("channel") != "":
		c.Source = source.ChannelSource{Channel: get("channel")}
	case get("pkgs-repo") != "":
		c.Source = &source.GitSource{Repository: get("pkgs-repo"), TTL: c.CacheTTL}
	case get("pkgs-path") != "":
		p, err := filepath.Abs(get("pkgs-path"))
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(filepath.Join(p, "default.nix")); err != nil {
			return nil, fmt.Errorf("NIXERY_PKGS_PATH / --pkgs-path %s must be a directory with a default.nix: %w", p, err)
		}
		c.Source = source.PathSource{Path: p}
	case get("pkgs-flake") != "":
		ref, err := source.ParseFlakeRef(get("pkgs-flake"))
		if err != nil {
			return nil, fmt.Errorf("NIXERY_PKGS_FLAKE / --pkgs-flake: %w", err)
		}
		c.Source = &source.FlakeSource{Ref: ref, TTL: c.CacheTTL}
	}

	cache := getenv("XDG_CACHE_HOME")
	if cache == "" {
		home := getenv("HOME")
		if home == "" {
			home = "/var/cache"
		} else {
			home = filepath.Join(home, ".cache")
		}
		cache = home
	}
	c.DemoPath = filepath.Join(cache, "nixery", "demo-pkgs")
	switch c.Backend {
	case "filesystem":
		if c.StoragePath == "" {
			c.StoragePath = filepath.Join(cache, "nixery", "storage")
		}
	case "gcs":
		c.GCS = storage.GCSConfig{
			Bucket: get("gcs-bucket"), Prefix: get("gcs-prefix"), Endpoint: get("gcs-endpoint"),
			SigningAccount: get("gcs-signing-account"), SigningKeyFile: get("gcs-signing-key"),
			DisableRedirect: !redirect, RedirectTTL: redirectTTL, Timeout: timeout,
		}
		if c.GCS.Bucket == "" {
			return nil, errors.New("NIXERY_STORAGE_BACKEND=gcs needs GCS_BUCKET / --gcs-bucket")
		}
		if (c.GCS.SigningAccount == "") != (c.GCS.SigningKeyFile == "") {
			return nil, errors.New("set both GCS_SIGNING_ACCOUNT and GCS_SIGNING_KEY, or neither")
		}
	case "s3":
		c.S3 = storage.S3Config{
			Bucket: get("s3-bucket"), Prefix: get("s3-prefix"), Region: get("s3-region"),
			Endpoint: get("s3-endpoint"), PathStyle: pathStyle,
			DisableRedirect: !redirect, RedirectTTL: redirectTTL, Timeout: timeout,
		}
		if c.S3.Bucket == "" {
			return nil, errors.New("NIXERY_STORAGE_BACKEND=s3 needs NIXERY_S3_BUCKET / --s3-bucket")
		}
	default:
		return nil, errors.New("NIXERY_STORAGE_BACKEND / --storage-backend must be filesystem, gcs or s3, not " + strconv.Quote(c.Backend))
	}
	return c, nil
}

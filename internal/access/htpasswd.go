package access

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/nixery/nixery/internal/bounded"
	"github.com/nixery/nixery/internal/fault"
)

// Users are the accounts of an htpasswd file with bcrypt entries, as
// Apache's `htpasswd -B` writes them and CNCF distribution reads them:
// one "user:$2y$cost$…" per line; empty lines and lines starting with '#'
// are skipped.
//
// bcrypt is slow on purpose (tens of milliseconds), and registry clients
// send their credentials with every request (a pull is dozens), so:
//   - a successful verification is remembered in memory, keyed by an HMAC
//     of user and password under a key made at start-up (the password is
//     never kept), bounded in number, forgotten when the file changes;
//   - at most a few bcrypt verifications run at once (half the cores), so
//     a flood of wrong passwords queues rather than taking every CPU;
//   - an unknown user costs one bcrypt verification too, against a hash
//     of the file's highest cost, so answers do not tell which users
//     exist; bcrypt compares in constant time;
//   - failed logins are limited per client (Client's address, IPv6 by
//     /64): after DefaultLoginBurst of them, DefaultLoginsPerMinute, and
//     beyond that a client's logins are refused unchecked (a
//     *LoginLimitedError, 429 with Retry-After), so passwords cannot be
//     guessed at the speed of the CPU; logins already remembered pass;
//   - only so many logins wait for a verification slot (MaxWaiting per
//     slot); beyond, they are refused at once, so a flood from many
//     addresses holds no more requests.
//
// The file is checked for changes (modification time, size, inode) on
// every verification and re-read when it changed; while it cannot be read
// or is malformed, nobody is let in (and the error is logged once).
type Users struct {
	path   string
	Logger *slog.Logger // nil: slog.Default()

	// compare checks a password against a bcrypt hash; a hook so tests
	// can count verifications.
	compare   func(hash, password []byte) error
	key       []byte        // HMAC key of the verification cache
	maxCached int           // bound of the cache
	sem       chan struct{} // bounds the bcrypt verifications at once
	waiting   atomic.Int64  // logins waiting for sem
	// maxWaiting bounds waiting.
	maxWaiting int64
	// failures are the failed logins per client.
	failures BuildLimiter

	mu      sync.Mutex
	version fileVersion
	gen     uint64            // bumped on every reload
	entries map[string][]byte // user → bcrypt hash
	dummy   []byte            // hash checked for unknown users
	err     error             // why the current file is unusable
	// cache holds verified credentials (cacheKey) → user.
	cache *bounded.Map[[sha256.Size]byte, string]
}

// maxCached bounds the verification cache. Only correct credentials are
// cached, so it holds at most one entry per user of the file (a user whose
// hash keeps the first 72 bytes may have more); the bound keeps memory
// fixed whatever the file holds.
const maxCached = 4096

// newCache is an empty verification cache of at most n logins, the least
// recently used dropped first.
func newCache(n int) *bounded.Map[[sha256.Size]byte, string] {
	return bounded.New[[sha256.Size]byte, string](n)
}

// Limits of failed logins: a client may fail DefaultLoginBurst logins in a
// row, then DefaultLoginsPerMinute (a person mistyping gets many tries; a
// guesser of a password of 8 random letters needs millennia).
const (
	DefaultLoginBurst      = 20
	DefaultLoginsPerMinute = 10
)

// MaxWaiting is how many logins may wait for each verification slot (a
// bcrypt check takes tens of milliseconds, so the last waits a few
// seconds).
const MaxWaiting = 64

// LoginLimitedError is returned by Verify for a login refused without a
// check: the client failed too many lately (Busy false), or too many
// logins wait for a check already (Busy true). RetryAfter is when to try
// again.
type LoginLimitedError struct {
	RetryAfter time.Duration
	Busy       bool
}

func (e *LoginLimitedError) Error() string {
	if e.Busy {
		return fmt.Sprintf("too many logins are being checked: try again in %d s", fault.Seconds(e.RetryAfter))
	}
	return fmt.Sprintf("too many failed logins from this client: try again in %d s", fault.Seconds(e.RetryAfter))
}

// Fault: too many logins, until RetryAfter.
func (e *LoginLimitedError) Fault() fault.Fault {
	return fault.Fault{Kind: fault.TooMany, RetryAfter: e.RetryAfter}
}

// maxFileSize bounds the htpasswd file read into memory.
const maxFileSize = 16 << 20

// fileVersion tells whether the file changed since it was read.
type fileVersion struct {
	modTime time.Time
	size    int64
	inode   uint64
}

func versionOf(fi os.FileInfo) fileVersion {
	v := fileVersion{modTime: fi.ModTime(), size: fi.Size()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		v.inode = st.Ino
	}
	return v
}

// LoadHtpasswd reads the htpasswd file at path. It fails, naming the
// line (never its hash), for a missing or unreadable file, a line that is
// no "user:hash", a hash that is not bcrypt, a user listed twice, or a
// file without entries.
func LoadHtpasswd(path string) (*Users, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	n := runtime.NumCPU() / 2
	if n < 1 {
		n = 1
	}
	u := &Users{path: path, compare: bcrypt.CompareHashAndPassword, key: key, sem: make(chan struct{}, n), maxCached: maxCached,
		maxWaiting: int64(n * MaxWaiting), failures: BuildLimiter{PerMinute: DefaultLoginsPerMinute, Burst: DefaultLoginBurst}}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("htpasswd file: %w", err)
	}
	if err := u.load(fi); err != nil {
		return nil, err
	}
	return u, nil
}

// Path is the file the users come from.
func (u *Users) Path() string { return u.path }

func (u *Users) logger() *slog.Logger {
	if u.Logger != nil {
		return u.Logger
	}
	return slog.Default()
}

// load reads the file (whose stat is fi) and replaces the entries; the
// verification cache starts empty. Called with u.mu held, or before u is
// shared.
func (u *Users) load(fi os.FileInfo) error {
	u.version = versionOf(fi)
	u.gen++
	u.cache = newCache(u.maxCached)
	u.entries, u.err = nil, nil
	entries, maxCost, err := readHtpasswd(u.path)
	if err != nil {
		u.err = err
		return err
	}
	if u.dummy == nil || mustCost(u.dummy) != maxCost {
		// A hash of a random password nobody knows, at the file's
		// highest cost.
		secret := make([]byte, 32)
		rand.Read(secret)
		dummy, err := bcrypt.GenerateFromPassword(secret, maxCost)
		if err != nil {
			u.err = fmt.Errorf("htpasswd file %s: %w", u.path, err)
			return u.err
		}
		u.dummy = dummy
	}
	u.entries = entries
	// An unknown user costs a check at the highest cost: a user whose
	// entry is cheaper answers faster, and so can be told from one that
	// does not exist.
	var cheaper []string
	minCost := maxCost
	for user, hash := range entries {
		if c := mustCost(hash); c < maxCost {
			cheaper = append(cheaper, user)
			minCost = min(minCost, c)
		}
	}
	if len(cheaper) > 0 {
		slices.Sort(cheaper)
		if len(cheaper) > 10 {
			cheaper = append(cheaper[:10], "…")
		}
		u.logger().Warn(fmt.Sprintf("htpasswd entries have bcrypt costs from %d to %d: users with cheaper entries answer faster than unknown users, which tells that they exist; give every entry the same cost (htpasswd -B -C %d)", minCost, maxCost, maxCost),
			"path", u.path, "cheaper", strings.Join(cheaper, ", "))
	}
	return nil
}

func mustCost(hash []byte) int {
	c, _ := bcrypt.Cost(hash)
	return c
}

// readHtpasswd parses the file and returns its entries and their highest
// bcrypt cost.
func readHtpasswd(path string) (map[string][]byte, int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("htpasswd file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, 0, fmt.Errorf("htpasswd file %s: %w", path, err)
	}
	if len(data) > maxFileSize {
		return nil, 0, fmt.Errorf("htpasswd file %s: larger than %d MiB", path, maxFileSize>>20)
	}
	entries := map[string][]byte{}
	maxCost := 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxFileSize)
	for line := 1; sc.Scan(); line++ {
		t := strings.TrimSpace(sc.Text())
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		user, hash, ok := strings.Cut(t, ":")
		if !ok || user == "" {
			return nil, 0, fmt.Errorf("htpasswd file %s, line %d: not a \"user:hash\" entry", path, line)
		}
		if _, dup := entries[user]; dup {
			return nil, 0, fmt.Errorf("htpasswd file %s, line %d: user %q is listed twice", path, line, user)
		}
		cost, err := bcrypt.Cost([]byte(hash))
		if err != nil || !strings.HasPrefix(hash, "$2") {
			return nil, 0, fmt.Errorf("htpasswd file %s, line %d: the entry of user %q is not a bcrypt hash; only bcrypt is accepted (make entries with `htpasswd -B`)", path, line, user)
		}
		entries[user] = []byte(hash)
		maxCost = max(maxCost, cost)
	}
	if err := sc.Err(); err != nil {
		return nil, 0, fmt.Errorf("htpasswd file %s: %w", path, err)
	}
	if len(entries) == 0 {
		return nil, 0, fmt.Errorf("htpasswd file %s has no entries: nobody could log in (add one with `htpasswd -B %s <user>`)", path, path)
	}
	return entries, maxCost, nil
}

// snapshot re-reads the file if it changed and returns what to verify
// against.
func (u *Users) snapshot() (entries map[string][]byte, dummy []byte, gen uint64, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	fi, statErr := os.Stat(u.path)
	switch {
	case statErr != nil:
		if u.err == nil || u.entries != nil {
			u.logger().Error("htpasswd file unusable: nobody is let in until it is back", "error", statErr)
			u.entries, u.err = nil, fmt.Errorf("htpasswd file: %w", statErr)
			u.version = fileVersion{}
			u.gen++
			u.cache = newCache(u.maxCached)
		}
	case versionOf(fi) != u.version:
		if err := u.load(fi); err != nil {
			u.logger().Error("htpasswd file unusable: nobody is let in until it is fixed", "error", err)
		} else {
			u.logger().Info("htpasswd file re-read", "path", u.path, "users", len(u.entries))
		}
	}
	return u.entries, u.dummy, u.gen, u.err
}

// cacheKey is an HMAC of the credentials: what the cache holds is useless
// to anyone who reads the process memory without the key, and never the
// password.
func (u *Users) cacheKey(user, password string) [sha256.Size]byte {
	m := hmac.New(sha256.New, u.key)
	fmt.Fprintf(m, "%d:%s", len(user), user)
	io.WriteString(m, password)
	var k [sha256.Size]byte
	m.Sum(k[:0])
	return k
}

// ErrUnavailable is returned when the htpasswd file cannot be used (it
// vanished or became malformed): nobody is let in.
var ErrUnavailable = errors.New("htpasswd file unusable")

// Verify reports whether password is user's. It returns an error only
// when ctx ends while waiting for a verification slot, when the file is
// unusable (wrapping ErrUnavailable), or when the login is refused
// unchecked (a *LoginLimitedError).
func (u *Users) Verify(ctx context.Context, user, password string) (bool, error) {
	entries, dummy, gen, err := u.snapshot()
	if err != nil {
		return false, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	key := u.cacheKey(user, password)
	u.mu.Lock()
	cached, hit := u.cache.Get(key)
	u.mu.Unlock()
	if hit && cached == user {
		return true, nil
	}

	// Limited by the client's address even when a user is named: a
	// guesser names the user it guesses for.
	if wait := u.failures.wait(ctx); wait > 0 {
		return false, &LoginLimitedError{RetryAfter: wait}
	}
	if u.waiting.Add(1) > u.maxWaiting {
		u.waiting.Add(-1)
		return false, &LoginLimitedError{RetryAfter: time.Second, Busy: true}
	}
	select {
	case u.sem <- struct{}{}:
		u.waiting.Add(-1)
	case <-ctx.Done():
		u.waiting.Add(-1)
		return false, ctx.Err()
	}
	hash, known := entries[user]
	if !known {
		hash = dummy
	}
	match := u.compare(hash, []byte(password)) == nil
	<-u.sem
	if !match || !known {
		u.failures.charge(ctx)
		return false, nil
	}

	u.mu.Lock()
	defer u.mu.Unlock()
	if u.gen == gen { // not verified against a file replaced meanwhile
		u.cache.Put(key, user)
	}
	return true, nil
}

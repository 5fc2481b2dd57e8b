package access_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/nixery/nixery/internal/access"
)

// hash makes a bcrypt entry as `htpasswd -B` does ($2y$), at the lowest
// cost so that tests stay fast.
func hash(t *testing.T, password string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return "$2y$" + strings.TrimPrefix(string(h), "$2a$")
}

// writeFile replaces path atomically (as editors and config management
// do), so the new file has a new inode.
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestLoadHtpasswdErrors(t *testing.T) {
	dir := t.TempDir()
	good := hash(t, "secret")
	tests := []struct {
		name, content string
		want          []string // substrings of the error
	}{
		{"md5", "alice:" + good + "\nbob:$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/\n", []string{"line 2", `"bob"`, "not a bcrypt hash", "htpasswd -B"}},
		{"sha1", "# comment\n\ncarol:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n", []string{"line 3", `"carol"`, "not a bcrypt hash"}},
		{"crypt", "dave:rl0uE8ZEfn0.U\n", []string{"line 1", "not a bcrypt hash"}},
		{"plain", "erin:password123\n", []string{"line 1", "not a bcrypt hash"}},
		{"no colon", "alice:" + good + "\njust-a-name\n", []string{"line 2", `not a "user:hash" entry`}},
		{"no user", ":" + good + "\n", []string{"line 1", `not a "user:hash" entry`}},
		{"twice", "alice:" + good + "\nalice:" + good + "\n", []string{"line 2", `"alice"`, "twice"}},
		{"empty", "# nobody yet\n", []string{"no entries"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, tt.name)
			writeFile(t, path, tt.content)
			_, err := access.LoadHtpasswd(path)
			if err == nil {
				t.Fatal("loaded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			// Never the hash, nor any part of the secret column.
			for _, line := range strings.Split(tt.content, "\n") {
				if _, secret, ok := strings.Cut(line, ":"); ok && len(secret) > 4 && strings.Contains(err.Error(), secret[2:]) {
					t.Errorf("error %q shows a hash", err)
				}
			}
		})
	}
	if _, err := access.LoadHtpasswd(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
}

// newUsers writes an htpasswd file and loads it, counting bcrypt
// verifications.
func newUsers(t *testing.T, content string) (*access.Users, string, *atomic.Int64) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "htpasswd")
	writeFile(t, path, content)
	u, err := access.LoadHtpasswd(path)
	if err != nil {
		t.Fatal(err)
	}
	u.Logger = slog.New(slog.DiscardHandler)
	calls := new(atomic.Int64)
	access.SetCompare(u, func(h, p []byte) error {
		calls.Add(1)
		return bcrypt.CompareHashAndPassword(h, p)
	})
	return u, path, calls
}

func TestVerifyCache(t *testing.T) {
	ctx := context.Background()
	u, path, calls := newUsers(t, "alice:"+hash(t, "wonderland")+"\nbob:"+hash(t, "builder")+"\n")
	check := func(user, password string, want bool, wantCalls int64) {
		t.Helper()
		before := calls.Load()
		ok, err := u.Verify(ctx, user, password)
		if err != nil || ok != want {
			t.Errorf("Verify(%q, %q) = %v, %v; want %v", user, password, ok, err, want)
		}
		if got := calls.Load() - before; got != wantCalls {
			t.Errorf("Verify(%q, %q): %d bcrypt verifications, want %d", user, password, got, wantCalls)
		}
	}
	check("alice", "wonderland", true, 1)
	check("alice", "wonderland", true, 0) // remembered
	check("alice", "wonderland", true, 0)
	check("bob", "builder", true, 1)
	// Failures are never remembered, and an unknown user costs a bcrypt
	// verification like a wrong password.
	check("alice", "wrong", false, 1)
	check("alice", "wrong", false, 1)
	check("mallory", "wonderland", false, 1)
	check("mallory", "", false, 1)
	// One user's password is not another's.
	check("bob", "wonderland", false, 1)
	check("alice", "builder", false, 1)

	// The file changes: alice's new password counts, the old one no
	// longer (the cache is forgotten), bob is gone.
	writeFile(t, path, "alice:"+hash(t, "looking-glass")+"\n")
	check("alice", "wonderland", false, 1)
	check("alice", "looking-glass", true, 1)
	check("alice", "looking-glass", true, 0)
	check("bob", "builder", false, 1)

	// A broken file lets nobody in, cached or not, until it is fixed.
	writeFile(t, path, "alice:plaintext\n")
	if ok, err := u.Verify(ctx, "alice", "looking-glass"); ok || err == nil {
		t.Errorf("malformed file: Verify = %v, %v", ok, err)
	}
	os.Remove(path)
	if ok, err := u.Verify(ctx, "alice", "looking-glass"); ok || err == nil {
		t.Errorf("missing file: Verify = %v, %v", ok, err)
	}
	writeFile(t, path, "alice:"+hash(t, "looking-glass")+"\n")
	check("alice", "looking-glass", true, 1)
}

// TestVerifyBounded floods Verify with wrong passwords while every bcrypt
// verification is held: no more than the slots run at once, the others
// wait, and a remembered user is still let in meanwhile.
func TestVerifyBounded(t *testing.T) {
	u, _, _ := newUsers(t, "alice:"+hash(t, "wonderland")+"\n")
	ctx := context.Background()
	if ok, _ := u.Verify(ctx, "alice", "wonderland"); !ok {
		t.Fatal("alice not let in")
	}
	slots := access.VerifySlots(u)
	if slots < 1 {
		t.Fatalf("%d slots", slots)
	}
	var running, peak atomic.Int64
	entered := make(chan struct{})
	release := make(chan struct{})
	access.SetCompare(u, func(h, p []byte) error {
		n := running.Add(1)
		for {
			old := peak.Load()
			if n <= old || peak.CompareAndSwap(old, n) {
				break
			}
		}
		entered <- struct{}{}
		<-release
		running.Add(-1)
		return bcrypt.ErrMismatchedHashAndPassword
	})
	const flood = 20
	var wg sync.WaitGroup
	for i := 0; i < flood; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ok, _ := u.Verify(ctx, "alice", "guess"); ok {
				t.Error("a wrong password was let in")
			}
		}()
	}
	for i := 0; i < slots; i++ {
		<-entered
	}
	// Every slot is taken; a cached login does not need one.
	if ok, err := u.Verify(ctx, "alice", "wonderland"); !ok || err != nil {
		t.Errorf("cached login while the slots are taken: %v, %v", ok, err)
	}
	// A waiting request gives up with its context.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if ok, err := u.Verify(cctx, "mallory", "x"); ok || err == nil {
		t.Errorf("cancelled wait: %v, %v", ok, err)
	}
	go func() {
		for i := slots; i < flood; i++ {
			<-entered
		}
	}()
	close(release)
	wg.Wait()
	if p := peak.Load(); p > int64(slots) {
		t.Errorf("%d verifications at once, want at most %d", p, slots)
	}
}

// TestVerifyCacheBounded: the cache never holds more than its bound; a
// login that was dropped costs one bcrypt verification again.
func TestVerifyCacheBounded(t *testing.T) {
	ctx := context.Background()
	u, _, calls := newUsers(t, "a:"+hash(t, "pa")+"\nb:"+hash(t, "pb")+"\nc:"+hash(t, "pc")+"\n")
	access.SetCacheSize(u, 2)
	for _, user := range []string{"a", "b", "c"} {
		if ok, err := u.Verify(ctx, user, "p"+user); !ok || err != nil {
			t.Fatalf("%s: %v %v", user, ok, err)
		}
		if n := access.CacheLen(u); n > 2 {
			t.Fatalf("cache holds %d, bound 2", n)
		}
	}
	before := calls.Load()
	for _, user := range []string{"a", "b", "c"} {
		u.Verify(ctx, user, "p"+user)
	}
	if got := calls.Load() - before; got < 1 {
		t.Errorf("3 users through a cache of 2 cost %d bcrypt verifications, want at least 1", got)
	}
}

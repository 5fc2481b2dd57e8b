package access_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/nixery/nixery/internal/access"
)

// loginServer serves a guarded handler on 127.0.0.1 that trusts
// X-Forwarded-For, so that a test can speak as several clients.
func loginServer(t *testing.T, u *access.Users) *httptest.Server {
	t.Helper()
	g := &access.Guard{Users: u, TrustProxy: true}
	srv := httptest.NewServer(g.Identify(g.Require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "in")
	}), nil)))
	t.Cleanup(srv.Close)
	return srv
}

func login(t *testing.T, srv *httptest.Server, client, user, password string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("GET", srv.URL+"/", nil)
	req.Header.Set("X-Forwarded-For", client)
	req.SetBasicAuth(user, password)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// A client that keeps guessing passwords is slowed down: after a burst
// of failed logins it gets 429 with Retry-After, without a bcrypt
// verification, until its bucket refills. Other clients, and logins
// already remembered, are not affected.
func TestLoginFailuresLimited(t *testing.T) {
	u, _, calls := newUsers(t, "alice:"+hash(t, "wonderland")+"\n")
	c := &clock{t: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	access.SetLoginClock(u, c.now)
	srv := loginServer(t, u)
	const attacker, other = "198.51.100.7", "203.0.113.9"

	if resp := login(t, srv, other, "alice", "wonderland"); resp.StatusCode != 200 {
		t.Fatalf("right password: %d", resp.StatusCode)
	}
	burst := access.DefaultLoginBurst
	for i := 0; i < burst; i++ {
		if resp := login(t, srv, attacker, "alice", "guess"); resp.StatusCode != 401 {
			t.Fatalf("guess %d: %d, want 401", i+1, resp.StatusCode)
		}
	}
	before := calls.Load()
	for _, user := range []string{"alice", "mallory"} {
		resp := login(t, srv, attacker, user, "guess")
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("guess over the burst (%s): %d Retry-After %q, want 429 with Retry-After", user, resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	}
	if n := calls.Load() - before; n != 0 {
		t.Errorf("refused guesses cost %d bcrypt verifications", n)
	}
	// Even the right password waits: the guesser could be guessing it.
	if resp := login(t, srv, attacker, "alice", "wonderland"); resp.StatusCode != 429 && resp.StatusCode != 200 {
		t.Errorf("right password from the limited client: %d", resp.StatusCode)
	}
	// Another client logs in; a remembered login passes everywhere.
	if resp := login(t, srv, "192.0.2.50", "alice", "wonderland"); resp.StatusCode != 200 {
		t.Errorf("another client: %d", resp.StatusCode)
	}
	// The bucket refills.
	c.advance(time.Minute)
	if resp := login(t, srv, attacker, "alice", "guess"); resp.StatusCode != 401 {
		t.Errorf("a minute later: %d, want 401 (checked again)", resp.StatusCode)
	}
}

// While every verification slot is held, only so many logins wait for
// one; the rest are refused at once with 429 (a flood of wrong
// passwords from many addresses queues no further).
func TestLoginWaitersBounded(t *testing.T) {
	u, _, _ := newUsers(t, "alice:"+hash(t, "wonderland")+"\n")
	slots, waiting := access.VerifySlots(u), access.WaitingSlots(u)
	entered := make(chan struct{}, slots+waiting)
	release := make(chan struct{})
	access.SetCompare(u, func(h, p []byte) error {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
		return bcrypt.ErrMismatchedHashAndPassword
	})
	srv := loginServer(t, u)
	var releaseOnce sync.Once
	free := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(free) // before the server closes, which waits for its requests
	var wg sync.WaitGroup
	statuses := make(chan int, slots+waiting+10)
	for i := 0; i < slots+waiting+10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses <- login(t, srv, fmt.Sprintf("10.1.%d.%d", i/250, i%250), "alice", "guess").StatusCode
		}()
	}
	// slots are in, and 10 are refused while they are held.
	for i := 0; i < slots; i++ {
		<-entered
	}
	refused := 0
	for refused < 10 {
		select {
		case s := <-statuses:
			if s != http.StatusTooManyRequests {
				t.Fatalf("while the slots are held and %d wait: %d, want 429", waiting, s)
			}
			refused++
		case <-time.After(10 * time.Second):
			t.Fatalf("%d refused after 10 s, want 10", refused)
		}
	}
	free()
	wg.Wait()
	close(statuses)
	for s := range statuses {
		if s != 401 {
			t.Errorf("a waiting login: %d, want 401", s)
		}
	}
}

// An unknown user is checked against a hash of the file's highest cost,
// so a user whose entry is cheaper answers faster than an unknown one:
// the file is accepted, with a warning that says so.
func TestMixedCostsWarned(t *testing.T) {
	u, path, _ := newUsers(t, "alice:"+hash(t, "wonderland")+"\n")
	var logged strings.Builder
	u.Logger = slog.New(slog.NewTextHandler(&logged, nil))
	dearer, err := bcrypt.GenerateFromPassword([]byte("builder"), bcrypt.MinCost+1)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, "alice:"+hash(t, "wonderland")+"\nbob:"+string(dearer)+"\n")
	if ok, err := u.Verify(context.Background(), "bob", "builder"); !ok || err != nil {
		t.Fatalf("bob: %v %v", ok, err)
	}
	if !strings.Contains(logged.String(), "bcrypt costs from 4 to 5") || !strings.Contains(logged.String(), "alice") {
		t.Errorf("no warning of mixed costs naming the cheaper users: %s", logged.String())
	}
	logged.Reset()
	writeFile(t, path, "alice:"+hash(t, "wonderland")+"\n")
	u.Verify(context.Background(), "alice", "wonderland")
	if strings.Contains(logged.String(), "costs") {
		t.Errorf("warned of one cost: %s", logged.String())
	}
}

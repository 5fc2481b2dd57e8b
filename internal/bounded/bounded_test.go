package bounded

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is a settable time for expiry.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// TestMap runs steps against a Map of capacity 2 (ttl 10 s where
// expiring) and checks the keys it holds after each: "put a" puts a
// (value a), "get a" expects a's value, "miss a" expects none, "del a"
// deletes it, "wait 5" advances the clock by 5 s, "clear" clears.
func TestMap(t *testing.T) {
	for _, tt := range []struct {
		name     string
		expiring bool
		steps    []string // each "op key", then after "=" the keys held
	}{
		{"under capacity", false, []string{"put a = a", "put b = a b", "get a = a b"}},
		{"the least recently put goes", false, []string{"put a = a", "put b = a b", "put c = b c", "miss a = b c"}},
		{"a read keeps an entry", false, []string{"put a = a", "put b = a b", "get a = a b", "put c = a c", "miss b = a c"}},
		{"a write keeps an entry", false, []string{"put a = a", "put b = a b", "put a = a b", "put c = a c"}},
		{"delete", false, []string{"put a = a", "put b = a b", "del a = b", "miss a = b", "put c = b c"}},
		{"clear", false, []string{"put a = a", "put b = a b", "clear = ", "miss a = ", "put c = c"}},
		{"no expiry without a ttl", false, []string{"put a = a", "wait 3600 = a", "get a = a"}},
		{"expired after ttl", true, []string{"put a = a", "wait 9 = a", "get a = a", "wait 1 = a", "miss a = "}},
		{"a read does not renew", true, []string{"put a = a", "wait 5 = a", "get a = a", "wait 5 = a", "miss a = "}},
		{"a put renews", true, []string{"put a = a", "wait 5 = a", "put a = a", "wait 5 = a", "get a = a"}},
		{"expired go before the least recently used", true, []string{
			"put a = a", "wait 5 = a", "put b = a b", "get a = a b", "wait 5 = a b", "put c = b c", "get b = b c"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := &clock{t: time.Unix(1000, 0)}
			m := New[string, string](2)
			if tt.expiring {
				m = NewExpiring[string, string](2, 10*time.Second, c.now)
			}
			for _, step := range tt.steps {
				op, want, _ := strings.Cut(step, " = ")
				verb, arg, _ := strings.Cut(op, " ")
				switch verb {
				case "put":
					m.Put(arg, arg)
				case "get":
					if v, ok := m.Get(arg); !ok || v != arg {
						t.Fatalf("%s: Get = %q, %v", step, v, ok)
					}
				case "miss":
					if v, ok := m.Get(arg); ok {
						t.Fatalf("%s: Get = %q, want none", step, v)
					}
				case "del":
					m.Delete(arg)
				case "clear":
					m.Clear()
				case "wait":
					var s int
					fmt.Sscan(arg, &s)
					c.advance(time.Duration(s) * time.Second)
				}
				if got := keys(m); got != want {
					t.Fatalf("after %q: holds %q, want %q", op, got, want)
				}
			}
		})
	}
}

// keys lists the keys m holds, sorted.
func keys(m *Map[string, string]) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ks []string
	for k := range m.items {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	if len(ks) != m.order.Len() {
		return "map and list disagree"
	}
	return strings.Join(ks, " ")
}

func TestDeleteIf(t *testing.T) {
	m := New[string, int](4)
	m.Put("a", 1)
	if m.DeleteIf("a", func(v int) bool { return v == 2 }) {
		t.Error("deleted an entry whose value did not match")
	}
	if !m.DeleteIf("a", func(v int) bool { return v == 1 }) {
		t.Error("did not delete the matching entry")
	}
	if m.DeleteIf("b", func(int) bool { return true }) || m.Len() != 0 {
		t.Error("deleted a missing key")
	}
}

func TestCapacityAtLeastOne(t *testing.T) {
	m := New[int, int](0)
	m.Put(1, 1)
	m.Put(2, 2)
	if v, ok := m.Get(2); !ok || v != 2 || m.Len() != 1 {
		t.Errorf("capacity 0: Get(2) = %d, %v; Len %d", v, ok, m.Len())
	}
}

// TestConcurrent is for -race: many writers and readers stay within the
// bound.
func TestConcurrent(t *testing.T) {
	c := &clock{t: time.Unix(0, 0)}
	m := NewExpiring[int, int](64, time.Second, c.now)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				k := (g*7919 + i) % 500
				m.Put(k, i)
				m.Get(k / 2)
				if i%100 == 0 {
					m.Delete(k + 1)
					c.advance(100 * time.Millisecond)
				}
				if n := m.Len(); n > 64 {
					t.Errorf("Len %d beyond capacity 64", n)
					return
				}
			}
		})
	}
	wg.Wait()
}

// Package bounded is the one in-memory map whose size is fixed: the
// caches and memories of a long-running server (resolutions, failures
// remembered for a while, rate-limit buckets per client, verified
// logins) that a flood of distinct keys must not grow without end.
//
// A Map holds at most its capacity. Adding a key to a full Map evicts
// the least recently used entry (read or written), after any expired
// ones: the entries still in use stay, whatever the flood. With a time
// to live, an entry older than it (since it was last put) is gone, by the
// Map's clock, which tests inject.
//
// For example, with capacity 2: Put a, Put b, Get a, Put c evicts b (a
// was used since), leaving a and c.
package bounded

import (
	"container/list"
	"sync"
	"time"
)

// Map is a map of at most a fixed number of entries, safe for concurrent
// use. Make it with New or NewExpiring.
type Map[K comparable, V any] struct {
	capacity int
	ttl      time.Duration    // 0: entries do not expire
	now      func() time.Time // nil: time.Now

	mu    sync.Mutex
	items map[K]*list.Element // of *entry[K, V]
	order list.List           // most recently used first
}

type entry[K comparable, V any] struct {
	key K
	val V
	at  time.Time // when it was put, if the Map expires entries
}

// New returns a Map of at most capacity entries (at least 1) that never
// expire.
func New[K comparable, V any](capacity int) *Map[K, V] {
	return &Map[K, V]{capacity: max(capacity, 1), items: map[K]*list.Element{}}
}

// NewExpiring returns a Map of at most capacity entries, each gone ttl
// after it was put, by now (time.Now if nil).
func NewExpiring[K comparable, V any](capacity int, ttl time.Duration, now func() time.Time) *Map[K, V] {
	m := New[K, V](capacity)
	m.ttl, m.now = ttl, now
	return m
}

func (m *Map[K, V]) clock() time.Time {
	if m.now != nil {
		return m.now()
	}
	return time.Now()
}

// expired says whether e has outlived the Map's time to live at now.
func (m *Map[K, V]) expired(e *entry[K, V], now time.Time) bool {
	return m.ttl > 0 && now.Sub(e.at) >= m.ttl
}

// Get returns the value of k and marks it used; ok is false if k is
// missing or expired.
func (m *Map[K, V]) Get(k K) (v V, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	el, ok := m.items[k]
	if !ok {
		return v, false
	}
	e := el.Value.(*entry[K, V])
	if m.ttl > 0 && m.expired(e, m.clock()) {
		m.remove(el)
		return v, false
	}
	m.order.MoveToFront(el)
	return e.val, true
}

// Put sets k to v, marks it used and, if the Map expires entries, starts
// its time to live again. Adding a key to a full Map first drops the
// expired entries, then the least recently used ones.
func (m *Map[K, V]) Put(k K, v V) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var now time.Time
	if m.ttl > 0 {
		now = m.clock()
	}
	if el, ok := m.items[k]; ok {
		e := el.Value.(*entry[K, V])
		e.val, e.at = v, now
		m.order.MoveToFront(el)
		return
	}
	if len(m.items) >= m.capacity && m.ttl > 0 {
		for el := m.order.Back(); el != nil; {
			prev := el.Prev()
			if m.expired(el.Value.(*entry[K, V]), now) {
				m.remove(el)
			}
			el = prev
		}
	}
	for len(m.items) >= m.capacity {
		m.remove(m.order.Back())
	}
	m.items[k] = m.order.PushFront(&entry[K, V]{key: k, val: v, at: now})
}

// Delete removes k.
func (m *Map[K, V]) Delete(k K) {
	m.DeleteIf(k, func(V) bool { return true })
}

// DeleteIf removes k if its value matches (for example, is still the one
// the caller read), and says whether it did.
func (m *Map[K, V]) DeleteIf(k K, match func(V) bool) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	el, ok := m.items[k]
	if !ok || !match(el.Value.(*entry[K, V]).val) {
		return false
	}
	m.remove(el)
	return true
}

// Len is the number of entries held, counting expired ones not yet
// dropped.
func (m *Map[K, V]) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.items)
}

// Clear removes every entry.
func (m *Map[K, V]) Clear() {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.items)
	m.order.Init()
}

// remove drops el; m.mu is held.
func (m *Map[K, V]) remove(el *list.Element) {
	delete(m.items, el.Value.(*entry[K, V]).key)
	m.order.Remove(el)
}

package access

import "time"

// SetCompare replaces the bcrypt comparison of u, so tests can count and
// hold verifications.
func SetCompare(u *Users, compare func(hash, password []byte) error) { u.compare = compare }

// VerifySlots is how many bcrypt verifications u runs at once.
func VerifySlots(u *Users) int { return cap(u.sem) }

// SetCacheSize bounds u's verification cache, and CacheLen tells its size.
func SetCacheSize(u *Users, n int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.maxCached, u.cache = n, newCache(n)
}
func CacheLen(u *Users) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.cache.Len()
}

// SetLoginClock sets the clock of u's failed-login limit.
func SetLoginClock(u *Users, now func() time.Time) { u.failures.Now = now }

// WaitingSlots is how many logins may wait for the verification slots of u.
func WaitingSlots(u *Users) int { return int(u.maxWaiting) }

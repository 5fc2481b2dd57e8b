// Package redact keeps credentials that are written into URLs
// (https://user:token@host/…, RFC 3986 §3.2.1 userinfo) out of what
// Nixery shows or logs: pages, API answers, errors and log lines.
//
// It works on any text, not only on a URL alone, because git and Nix
// repeat the URLs they were given inside their messages, and on text that
// is not a valid URL at all, because a message may have been cut short.
package redact

import "regexp"

// Mask replaces a password (and a token given as the user alone), as in
// url.URL.Redacted.
const Mask = "xxxxx"

// userinfoRE finds the userinfo of a URL: what follows "scheme://" up to
// the last "@" before the authority ends (RFC 3986 §3.2: at "/", "?",
// "#"; and, in running text, at white space). The last "@" because
// a password may itself hold one unescaped, which git accepts; everything
// before it is hidden. Redacting too much is harmless; too little is not.
var userinfoRE = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.\-]*://)([^\s/?#]*)@`)

// URLs returns s with the userinfo of every URL in it redacted: a
// password becomes Mask, the user name stays ("user:xxxxx@host"); a user
// alone, which is how many services take a token, becomes Mask
// ("xxxxx@host").
func URLs(s string) string {
	return userinfoRE.ReplaceAllStringFunc(s, func(m string) string {
		sub := userinfoRE.FindStringSubmatch(m)
		scheme, info := sub[1], sub[2]
		for i := 0; i < len(info); i++ {
			if info[i] == ':' {
				return scheme + info[:i] + ":" + Mask + "@"
			}
		}
		return scheme + Mask + "@"
	})
}

// WithoutUserinfo returns s with the userinfo of every URL in it removed
// ("https://user:token@host/x" → "https://host/x"): for names that must
// not change when only the credentials do, such as cache identities.
func WithoutUserinfo(s string) string {
	return userinfoRE.ReplaceAllString(s, "$1")
}

// openAuthorityRE finds a URL whose authority runs to the end of the
// text, so that its "@" may be in what was cut off.
var openAuthorityRE = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.\-]*://)[^\s/?#]*$`)

// Cut is URLs for a text cut short, such as a log line cut at its length
// limit: a URL whose authority runs to the end of s is masked whole, as
// what is left of it may be a password whose "@" was cut off
// ("https://user:passw" → "https://xxxxx").
func Cut(s string) string {
	return openAuthorityRE.ReplaceAllString(URLs(s), "${1}"+Mask)
}

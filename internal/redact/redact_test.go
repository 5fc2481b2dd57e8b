package redact

import "testing"

func TestRedact(t *testing.T) {
	tests := []struct{ in, urls, without string }{
		{"https://user:s3cret@example.org/pkgs.git", "https://user:xxxxx@example.org/pkgs.git", "https://example.org/pkgs.git"},
		{"https://ghp_token123@github.com/o/r", "https://xxxxx@github.com/o/r", "https://github.com/o/r"},
		{"https://user:xxxxx@example.org/", "https://user:xxxxx@example.org/", "https://example.org/"}, // idempotent
		{"https://example.org/pkgs.git", "https://example.org/pkgs.git", "https://example.org/pkgs.git"},
		{"https://example.org/a@b?c=d@e#f@g", "https://example.org/a@b?c=d@e#f@g", "https://example.org/a@b?c=d@e#f@g"}, // "@" after the authority
		{"https://u:p@ss@host/x", "https://u:xxxxx@host/x", "https://host/x"},                                           // unescaped "@" in the password
		{"https://u:p%40ss@host", "https://u:xxxxx@host", "https://host"},
		{"https://u:pw@host:8443", "https://u:xxxxx@host:8443", "https://host:8443"},
		{"git+ssh://git@host/r", "git+ssh://xxxxx@host/r", "git+ssh://host/r"},
		{"ssh://u:pw@[::1]:22/r", "ssh://u:xxxxx@[::1]:22/r", "ssh://[::1]:22/r"},
		{"/srv/pkgs", "/srv/pkgs", "/srv/pkgs"},
		{"git@github.com:o/r.git", "git@github.com:o/r.git", "git@github.com:o/r.git"}, // scp-like: no password
		{"mail a@b.c", "mail a@b.c", "mail a@b.c"},
		// In running text, quoted, several, and at the end of a message.
		{"error: Cannot find Git revision 'abc' in ref 'main' of repository 'https://u:pw@h/r.git'! Please", "error: Cannot find Git revision 'abc' in ref 'main' of repository 'https://u:xxxxx@h/r.git'! Please", "error: Cannot find Git revision 'abc' in ref 'main' of repository 'https://h/r.git'! Please"},
		{`{"url":"https://u:pw@h/r.git","ref":"main"}`, `{"url":"https://u:xxxxx@h/r.git","ref":"main"}`, `{"url":"https://h/r.git","ref":"main"}`},
		{"a http://x:1@h and https://y:2@i", "a http://x:xxxxx@h and https://y:xxxxx@i", "a http://h and https://i"},
		{"fetching 'https://tok@h'", "fetching 'https://xxxxx@h'", "fetching 'https://h'"},
		{"", "", ""},
	}
	for _, tt := range tests {
		if got := URLs(tt.in); got != tt.urls {
			t.Errorf("URLs(%q) = %q, want %q", tt.in, got, tt.urls)
		}
		if got := WithoutUserinfo(tt.in); got != tt.without {
			t.Errorf("WithoutUserinfo(%q) = %q, want %q", tt.in, got, tt.without)
		}
	}
}

func TestCut(t *testing.T) {
	tests := []struct{ in, want string }{
		{"fetching 'https://user:passw", "fetching 'https://xxxxx"},
		{"fetching 'https://ghp_tok", "fetching 'https://xxxxx"},
		{"fetching 'https://host/pa", "fetching 'https://host/pa"}, // past the authority: nothing hidden
		{"a https://u:pw@h/x and https://v:p", "a https://u:xxxxx@h/x and https://xxxxx"},
		{"no url at all", "no url at all"},
		{"https://", "https://xxxxx"},
	}
	for _, tt := range tests {
		if got := Cut(tt.in); got != tt.want {
			t.Errorf("Cut(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

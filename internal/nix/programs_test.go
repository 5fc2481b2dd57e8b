package nix

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestPrograms: Build reports meta.mainProgram of the requested packages
// that name one (the demo set's hello does, jq and coreutils do not),
// where lib.getExe finds it, and the trace carrying them is not logged.
func TestPrograms(t *testing.T) {
	src := demoSource(t)
	var lines []string
	r := &Runner{Timeout: time.Minute, Log: func(l string) { lines = append(lines, l) }}
	for _, tt := range []struct {
		packages []string
		want     []string // root suffix of each program, then its file
	}{
		{[]string{"hello"}, []string{"-hello-2.12.1/bin/hello"}},
		{[]string{"jq"}, nil},
		{[]string{"coreutils", "hello", "jq"}, []string{"-hello-2.12.1/bin/hello"}},
	} {
		t.Run(strings.Join(tt.packages, ","), func(t *testing.T) {
			req := src
			req.Packages = tt.packages
			res, err := r.Build(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Programs) != len(tt.want) {
				t.Fatalf("programs %q, want …%q", res.Programs, tt.want)
			}
			for i, w := range tt.want {
				p := res.Programs[i]
				if !strings.HasSuffix(p, w) || !slices.ContainsFunc(res.Roots, func(root string) bool { return strings.HasPrefix(p, root+"/") }) {
					t.Errorf("program %q, want …%s inside a root of %q", p, w, res.Roots)
				}
			}
		})
	}
	for _, l := range lines {
		if strings.Contains(l, "nixery-main-programs") {
			t.Errorf("the programs trace was logged: %q", l)
		}
	}
}

// TestProgramsLine: only the first main-programs trace counts (evaluation
// prints it before any builder runs, so a builder printing a look-alike
// cannot replace it), and a line that is no JSON list gives no programs.
func TestProgramsLine(t *testing.T) {
	for _, tt := range []struct {
		name   string
		input  string
		want   []string
		logged []string
	}{
		{"one", "trace: nixery-packages: [{\"name\":\"x\",\"outputs\":[\"/nix/store/a-x\"],\"programs\":[\"/nix/store/a-x/bin/x\"]}]\n", []string{"/nix/store/a-x/bin/x"}, nil},
		{"none", "trace: nixery-packages: [{\"name\":\"x\",\"outputs\":[\"/nix/store/a-x\"],\"programs\":[]}]\n", []string{}, nil},
		{"the first wins", "building\ntrace: nixery-packages: [{\"programs\":[\"/a\"]}]\ntrace: nixery-packages: [{\"programs\":[\"/evil\"]}]\n",
			[]string{"/a"}, []string{"building", "trace: nixery-packages: [{\"programs\":[\"/evil\"]}]"}},
		{"not JSON", "trace: nixery-packages: [nope\n", nil, nil},
		{"not a list of packages", "trace: nixery-packages: {\"a\":1}\n", nil, nil},
		{"elsewhere on a line", "echo trace: nixery-packages: [{\"programs\":[\"/a\"]}]\n", nil, []string{"echo trace: nixery-packages: [{\"programs\":[\"/a\"]}]"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var logged []string
			w := &lineWriter{log: func(l string) { logged = append(logged, l) }}
			w.Write([]byte(tt.input))
			w.flush()
			var programs []string
			if w.packages != nil {
				programs = []string{}
			}
			for _, p := range w.packages {
				programs = append(programs, p.Programs...)
			}
			if !slices.Equal(programs, tt.want) || (programs == nil) != (tt.want == nil) {
				t.Errorf("programs %#v, want %#v", programs, tt.want)
			}
			if !slices.Equal(logged, tt.logged) {
				t.Errorf("logged %q, want %q", logged, tt.logged)
			}
		})
	}
}

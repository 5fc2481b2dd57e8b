package e2e

// The image page's picture, the comparison of two images and the pack's
// progress on the build page, in headless Chromium (browser_test.go's
// WebDriver client); screenshots go with the other browser artefacts.

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

// buildImage builds ref on the server s with `nixery build`.
func buildImage(t *testing.T, s *nixery, ref string) {
	t.Helper()
	if out, err := exec.Command(bin, "build", "--quiet", "--server", "http://"+s.addr, ref).CombinedOutput(); err != nil {
		t.Fatalf("nixery build %s: %v\n%s", ref, err, out)
	}
}

// waitMatch waits until the text of css matches re.
func (d *webDriver) waitMatch(css string, re *regexp.Regexp) string {
	d.t.Helper()
	return d.waitFor(css, "matched "+re.String(), re.MatchString)
}

// keys sends key strokes (WebDriver key codes: "\uE004" is Tab) to the
// page.
func (d *webDriver) keys(values ...string) {
	d.t.Helper()
	var acts []map[string]string
	for _, v := range values {
		acts = append(acts, map[string]string{"type": "keyDown", "value": v}, map[string]string{"type": "keyUp", "value": v})
	}
	d.call("POST", "/actions", map[string]any{"actions": []any{map[string]any{"type": "key", "id": "keyboard", "actions": acts}}})
}

// script runs JavaScript in the page and decodes its result into out.
func (d *webDriver) script(js string, out any) {
	d.t.Helper()
	if err := json.Unmarshal(d.call("POST", "/execute/sync", map[string]any{"script": js, "args": []any{}}), out); err != nil {
		d.t.Fatalf("script result: %v", err)
	}
}

// The picture of shell/git: a store path per box; Tab reaches one, and
// focus shows its size, licence and why it is there. Then the comparison
// with hello, and with an image not built (a link to build it; nothing
// builds).
func TestBrowserPictureAndCompare(t *testing.T) {
	needServer(t)
	buildImage(t, &server, "shell/git")
	buildImage(t, &server, "hello")
	d := startBrowser(t)
	site := "http://" + server.addr

	d.call("POST", "/url", map[string]string{"url": site + "/image/shell/git"})
	d.waitText("h2#picture", "What takes the space")
	var tiles int
	d.script(`return document.querySelectorAll('#picture-map a.tile').length`, &tiles)
	if tiles < 5 {
		t.Errorf("%d store paths in the picture", tiles)
	}
	d.screenshot("picture")

	// Tab until a store path has the focus (the header's link comes
	// first); its details show below the map.
	type focused struct {
		Tile, Shown bool
		Text        string
	}
	var f focused
	for range 20 {
		d.keys("\uE004")
		d.script(`var a=document.activeElement, i=a&&a.querySelector&&a.querySelector('.info');
			return {Tile: !!(a&&a.classList&&a.classList.contains('tile')), Shown: !!i&&getComputedStyle(i).display!=='none', Text: i?i.textContent:''}`, &f)
		if f.Tile {
			break
		}
	}
	if !f.Tile || !f.Shown || !strings.Contains(f.Text, "licence:") || !strings.Contains(f.Text, "why: ") || !strings.Contains(f.Text, "· layer ") {
		t.Errorf("keyboard focus on the picture: %+v", f)
	}
	t.Logf("focused: %s", f.Text)
	d.screenshot("picture-focus")

	// Git's own box: its licence from the package meta, why: itself.
	var git string
	d.script(`var t=[].slice.call(document.querySelectorAll('#picture-map a.tile')).find(function(a){return a.querySelector('title').textContent.indexOf('-git-2.42.0')>=0});
		return t?t.querySelector('.info').textContent:''`, &git)
	if !strings.Contains(git, "licence: GPL-2.0-or-later") || !strings.Contains(git, "why: git-2.42.0") {
		t.Errorf("git's box says %q", git)
	}

	// Compared with hello, from the page's form.
	form := d.find("#compare-form input[name=compare]")
	d.call("POST", "/element/"+form+"/value", map[string]string{"text": "hello\n"})
	d.waitText("#compare h2", "Compared with hello")
	cmp := d.text("#compare")
	if !strings.Contains(cmp, "shell/git alone") || !strings.Contains(cmp, "hello alone") || !strings.Contains(cmp, "They share") {
		t.Errorf("the comparison:\n%s", cmp)
	}
	if !strings.HasSuffix(d.url(), "/image/shell/git?compare=hello") {
		t.Errorf("the form went to %s", d.url())
	}
	d.screenshot("compare")

	d.call("POST", "/url", map[string]string{"url": site + "/image/shell/git?compare=git/readline"})
	if s := d.waitText("#compare-missing", "not built yet"); !strings.Contains(s, "Build it") {
		t.Errorf("comparison with an image not built: %q", s)
	}
	resp, body := get(t, "GET", "/api/builds", "")
	if resp.StatusCode != 200 || strings.Contains(string(body), "git/readline") {
		t.Errorf("the comparison started a build: %s", body)
	}
}

// The build page shows the pack's progress. A server whose packs wait
// for the test once half packed (NIXERY_TEST_HOLD_PACK) lets the page be
// seen mid-pack, then the pack finishes.
func TestBrowserPackProgress(t *testing.T) {
	needServer(t)
	tmp := t.TempDir()
	fifo := filepath.Join(tmp, "hold")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := start(tmp, filepath.Join(tmp, "storage"), "NIXERY_TEST_HOLD_PACK="+fifo)
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	released := false
	release := func() {
		if !released {
			released = true
			// Opening for writing waits for the held pack to open it.
			if f, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
				f.Close()
			}
		}
	}
	defer func() {
		if !released {
			go release()
		}
	}()

	d := startBrowser(t)
	d.call("POST", "/url", map[string]string{"url": "http://" + s.addr + "/build/shell/git"})
	// The first event comes with the first bytes; the held pack's
	// comes at half.
	mid := d.waitMatch("#pack-text", regexp.MustCompile(`^packed [0-9.]+ of [0-9.]+ MiB \(([4-9][0-9]) %\)`))

	t.Logf("mid-pack: %q", mid)
	d.screenshot("pack-progress")
	release()
	d.waitText("#result", "Image ready")
	if end := d.text("#pack-text"); !strings.HasPrefix(end, "packed ") || !strings.Contains(end, " MiB in ") {
		t.Errorf("pack progress at the end: %q", end)
	}
	if log := d.text("#log"); !strings.Contains(log, "MiB (uncompressed) in") {
		t.Errorf("the log lacks the pack's summary:\n%s", log)
	}
}

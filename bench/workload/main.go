// Command workload measures the typical workload of bench/pkgset end to
// end, as a user sees it: a real `nixery serve` over a real Nix package
// set, pulled image after image by a real layer-caching client.
//
//	go run ./bench/workload                  # the 26 images at the generated sizes (1,517 MiB of store paths)
//	go run ./bench/workload -scale 0.05      # a quick run: every store path 1/20 of its size
//	go run ./bench/workload -images 20       # the first 20 images only
//	go run ./bench/workload -pull shell/git  # other images of the generated set, in this order
//
// It needs root with Nix (nix-build), skopeo and a static busybox
// (Debian: busybox-static), and no network beyond 127.0.0.1. Steps:
//
//  1. The store paths of the workload's closures (bench/pkgset, seed 1:
//     249 of its 1,082 paths) are written as a Nix package set in a
//     temporary directory (see nixset.go): generated content of each
//     path's NAR size × -scale, references as generated.
//  2. nix-build realises every package of the workload once. Not timed:
//     the figures are for realised store paths, as on a machine with a
//     binary cache or after the first build.
//  3. `nixery serve` (built from this checkout, or -nixery) serves the set
//     (NIXERY_PKGS_PATH) on 127.0.0.1 with fresh filesystem storage.
//  4. skopeo copies each image in order into one OCI layout directory,
//     which is a layer-caching client: a blob already in the directory is
//     not downloaded again. Each image is timed from the start of skopeo
//     to its exit (manifest request, the build it causes, every new blob
//     downloaded and verified). The server's phase times per image are
//     the growth of its nixery_build_phase_seconds sums on /metrics.
//  5. With -warm (the default) the same pulls again, into a fresh OCI
//     directory, from the now warm server (manifest and layer caches hit,
//     no Nix): the cost of the client and of serving the bytes.
//
// Everything is in the temporary directory and removed at the end. The
// store paths stay in the Nix store, unrooted (their GC roots were in the
// temporary directory): `nix-store --gc` collects them.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/nixery/nixery/bench/pkgset"
	"github.com/nixery/nixery/internal/demo"
)

// phases are the server's build phases (package builder's Phases), in
// the order of a build.
var phases = []string{"realise", "graph", "layers", "pack", "manifest"}

func main() {
	scale := flag.Float64("scale", 1, "NAR size of every store path × this (1: the generated sizes; smaller for a quick run)")
	seed := flag.Uint64("seed", 1, "seed of the generated package set")
	images := flag.Int("images", len(pkgset.Workload), "pull the first N images of the workload")
	pull := flag.String("pull", "", "comma-separated image names to pull instead of the workload (packages of the generated set, meta-package shell)")
	warm := flag.Bool("warm", true, "pull everything a second time from the warm server, into a fresh client directory")
	nixery := flag.String("nixery", "", "the nixery binary to measure (default: built from this checkout with go build)")
	keep := flag.Bool("keep", false, "keep the temporary directory (package set, storage, server log, client directories)")
	flag.Parse()
	if *images < 1 || *images > len(pkgset.Workload) {
		fmt.Fprintf(os.Stderr, "workload: -images must be 1 to %d\n", len(pkgset.Workload))
		os.Exit(2)
	}
	workload := pkgset.Workload[:*images]
	if *pull != "" {
		workload = strings.Split(*pull, ",")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *scale, *seed, workload, *warm, *nixery, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "workload:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, scale float64, seed uint64, workload []string, warm bool, nixeryBin string, keep bool) error {
	for _, tool := range []string{"nix-build", "skopeo"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is not installed (bash scripts/deps installs it)", tool)
		}
	}
	busybox, err := demo.FindBusybox()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "nixery-workload-")
	if err != nil {
		return err
	}
	if keep {
		fmt.Printf("temporary directory (kept): %s\n", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}

	// 1. The package set.
	set := pkgset.Generate(seed)
	closure, attrs, err := workloadClosure(set, workload)
	if err != nil {
		return err
	}
	start := time.Now()
	ns, err := writeNixSet(filepath.Join(tmp, "pkgs"), set, closure, scale, busybox)
	if err != nil {
		return fmt.Errorf("write the package set: %w", err)
	}
	var narBytes int64
	for _, p := range ns.Paths {
		narBytes += p.NARSize
	}
	fmt.Printf("package set: %d store paths of the workload's closures (of %d, seed %d), %.1f MiB of NAR at scale %g, written in %.1f s\n",
		len(ns.Paths), len(set.Paths), seed, mib(narBytes), scale, time.Since(start).Seconds())

	// 2. Realise everything once (not timed).
	start = time.Now()
	if _, err := realise(ctx, ns.Dir, attrs, filepath.Join(tmp, "roots", "result")); err != nil {
		return err
	}
	fmt.Printf("realised with nix-build in %.1f s (not part of the figures)\n", time.Since(start).Seconds())

	// 3. The server.
	if nixeryBin == "" {
		nixeryBin = filepath.Join(tmp, "nixery")
		out, err := exec.CommandContext(ctx, "go", "build", "-o", nixeryBin, "github.com/nixery/nixery/cmd/nixery").CombinedOutput()
		if err != nil {
			return fmt.Errorf("go build ./cmd/nixery: %v\n%s", err, out)
		}
	}
	srv, err := startServer(ctx, nixeryBin, tmp, ns.Dir)
	if err != nil {
		return err
	}
	defer srv.stop()
	fmt.Printf("nixery serve on %s, filesystem storage, %d cores\n\n", srv.addr, runtime.NumCPU())

	// 4. and 5. The pulls.
	passes := []string{"cold"}
	if warm {
		passes = append(passes, "warm")
	}
	narSize := map[string]int64{} // by generated store path
	for _, p := range ns.Paths {
		narSize[p.Gen.Path] = p.NARSize
	}
	closureMiB := map[string]float64{}
	for _, img := range workload {
		c, err := set.Closure(pkgset.Packages(img))
		if err != nil {
			return err
		}
		var n int64
		for _, p := range c {
			n += narSize[p.Path]
		}
		closureMiB[img] = mib(n)
	}
	for _, pass := range passes {
		rows, err := pullAll(ctx, srv, filepath.Join(tmp, "client-"+pass), workload, closureMiB)
		if err != nil {
			return fmt.Errorf("%s pass: %w", pass, err)
		}
		printTable(pass, rows)
	}
	if err := srv.stop(); err != nil {
		return err
	}
	fmt.Println("The store paths stay in the Nix store, unrooted: nix-store --gc collects them.")
	return nil
}

// workloadClosure returns the union of the closures of the workload's
// images and the attributes they name, each sorted.
func workloadClosure(set *pkgset.Set, workload []string) ([]*pkgset.Path, []string, error) {
	seen := map[string]*pkgset.Path{}
	var attrs []string
	for _, img := range workload {
		pkgs := pkgset.Packages(img)
		c, err := set.Closure(pkgs)
		if err != nil {
			return nil, nil, fmt.Errorf("image %s: %w", img, err)
		}
		for _, p := range c {
			seen[p.Path] = p
		}
		attrs = append(attrs, pkgs...)
	}
	var out []*pkgset.Path
	for _, p := range seen {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b *pkgset.Path) int { return strings.Compare(a.Path, b.Path) })
	slices.Sort(attrs)
	return out, slices.Compact(attrs), nil
}

// realise builds the attributes of the package set in dir with
// nix-build, out-links at link (result, result-2, …), and returns the
// output paths in the order of attrs.
func realise(ctx context.Context, dir string, attrs []string, link string) ([]string, error) {
	args := []string{dir, "--out-link", link, "--max-jobs", strconv.Itoa(runtime.NumCPU())}
	for _, a := range attrs {
		args = append(args, "-A", a)
	}
	cmd := exec.CommandContext(ctx, "nix-build", args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("nix-build: %v\n%s", err, tail(stderr.String(), 20))
	}
	paths := strings.Fields(string(out))
	if len(paths) != len(attrs) {
		return nil, fmt.Errorf("nix-build printed %d paths for %d attributes", len(paths), len(attrs))
	}
	return paths, nil
}

// server is a running `nixery serve`.
type server struct {
	addr   string
	log    string // file of its standard output and error
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // of Wait, once exited is closed
}

func startServer(ctx context.Context, bin, tmp, pkgs string) (*server, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s := &server{addr: fmt.Sprintf("127.0.0.1:%d", port), log: filepath.Join(tmp, "server.log"), exited: make(chan struct{})}
	logFile, err := os.Create(s.log)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child has its own descriptor
	s.cmd = exec.Command(bin, "serve", "--host", "127.0.0.1", "--port", strconv.Itoa(port))
	s.cmd.Env = append(os.Environ(),
		"XDG_CACHE_HOME="+filepath.Join(tmp, "cache"),
		"STORAGE_PATH="+filepath.Join(tmp, "storage"),
		"NIXERY_STORAGE_BACKEND=filesystem",
		"NIXERY_PKGS_PATH="+pkgs,
		"NIXERY_CHANNEL=", "NIXERY_PKGS_REPO=", "NIXERY_PKGS_FLAKE=", "NIXERY_NIX_CACHE=",
		"NIX_TIMEOUT=600",
	)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { s.err = s.cmd.Wait(); close(s.exited) }()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + s.addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			return s, nil
		}
		select {
		case <-s.exited:
			return nil, fmt.Errorf("nixery exited at start-up:\n%s", s.tail())
		case <-ctx.Done():
			s.stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	s.stop()
	return nil, fmt.Errorf("nixery did not answer within 60 s:\n%s", s.tail())
}

// stop ends the server (SIGINT, then SIGKILL after 30 s); it may be
// called more than once.
func (s *server) stop() error {
	select {
	case <-s.exited:
		return nil
	default:
	}
	s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
		return errors.New("nixery did not stop within 30 s of SIGINT")
	}
	return nil
}

func (s *server) tail() string {
	data, _ := os.ReadFile(s.log)
	return tail(string(data), 30)
}

// phaseSums reads the server's nixery_build_phase_seconds_sum by phase.
func (s *server) phaseSums(ctx context.Context) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %s", resp.Status)
	}
	sums := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	const prefix = `nixery_build_phase_seconds_sum{phase="`
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), prefix)
		if !ok {
			continue
		}
		phase, value, ok := strings.Cut(line, `"} `)
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return nil, fmt.Errorf("/metrics: %q: %w", sc.Text(), err)
		}
		sums[phase] = v
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(sums) == 0 {
		return nil, errors.New("/metrics has no nixery_build_phase_seconds")
	}
	return sums, nil
}

// row is one image's pull.
type row struct {
	image   string
	seconds float64
	layers  int
	narMB   float64            // MiB of NAR of the image's closure (uncompressed store paths)
	newMB   float64            // MiB of blobs the client did not have (layers, config, manifest)
	phases  map[string]float64 // server seconds by phase during the pull
}

// pullAll pulls the images in order into the OCI layout dir with skopeo.
// closureMiB is each image's closure's NAR size.
func pullAll(ctx context.Context, srv *server, dir string, workload []string, closureMiB map[string]float64) ([]row, error) {
	var rows []row
	for i, img := range workload {
		before, err := srv.phaseSums(ctx)
		if err != nil {
			return nil, err
		}
		had, err := blobBytes(dir)
		if err != nil {
			return nil, err
		}
		ref := fmt.Sprintf("img%02d", i+1)
		start := time.Now()
		// Repository names are lower case (distribution-spec: the name
		// grammar), so a client asks for python3packages.numpy; Nixery
		// resolves attributes ignoring case, as the original does.
		cmd := exec.CommandContext(ctx, "skopeo", "copy", "--quiet", "--src-tls-verify=false",
			"docker://"+srv.addr+"/"+strings.ToLower(img)+":latest", "oci:"+dir+":"+ref)
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("skopeo copy %s: %v\n%s\nserver log:\n%s", img, err, out, srv.tail())
		}
		secs := time.Since(start).Seconds()
		has, err := blobBytes(dir)
		if err != nil {
			return nil, err
		}
		after, err := srv.phaseSums(ctx)
		if err != nil {
			return nil, err
		}
		layers, err := layerCount(dir, ref)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", img, err)
		}
		r := row{image: img, seconds: secs, layers: layers, narMB: closureMiB[img], newMB: mib(has - had), phases: map[string]float64{}}
		for p, v := range after {
			r.phases[p] = v - before[p]
		}
		rows = append(rows, r)
	}
	return rows, nil
}

// blobBytes sums the sizes of the blobs of the OCI layout at dir (0 if
// there is none yet).
func blobBytes(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(filepath.Join(dir, "blobs"), func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	return n, err
}

// layerCount reads the manifest tagged ref in the OCI layout at dir
// (image-spec image-layout.md: index.json, org.opencontainers.image.ref.name).
func layerCount(dir, ref string) (int, error) {
	var index struct {
		Manifests []struct {
			Digest      string            `json:"digest"`
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	data, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		return 0, err
	}
	if err := json.Unmarshal(data, &index); err != nil {
		return 0, fmt.Errorf("index.json: %w", err)
	}
	for _, m := range index.Manifests {
		if m.Annotations["org.opencontainers.image.ref.name"] != ref {
			continue
		}
		alg, hex, ok := strings.Cut(m.Digest, ":")
		if !ok {
			return 0, fmt.Errorf("index.json: digest %q", m.Digest)
		}
		data, err := os.ReadFile(filepath.Join(dir, "blobs", alg, hex))
		if err != nil {
			return 0, err
		}
		var manifest struct {
			Layers []json.RawMessage `json:"layers"`
		}
		if err := json.Unmarshal(data, &manifest); err != nil {
			return 0, fmt.Errorf("manifest %s: %w", m.Digest, err)
		}
		return len(manifest.Layers), nil
	}
	return 0, fmt.Errorf("index.json has no manifest %q", ref)
}

func printTable(pass string, rows []row) {
	fmt.Printf("%s pass: skopeo copy into one OCI layout (a layer-caching client); seconds from start to exit of skopeo;\n", pass)
	fmt.Printf("closure = NAR MiB of the image's store paths, new = MiB of blobs downloaded; server phases from /metrics\n\n")
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 1, ' ', tabwriter.AlignRight|tabwriter.Debug)
	fmt.Fprint(tw, "image\tseconds\tlayers\tclosure MiB\tnew MiB\t")
	for _, p := range phases {
		fmt.Fprintf(tw, "%s s\t", p)
	}
	fmt.Fprintln(tw)
	line := func(r row) {
		fmt.Fprintf(tw, "%s\t%.2f\t%d\t%.1f\t%.1f\t", r.image, r.seconds, r.layers, r.narMB, r.newMB)
		for _, p := range phases {
			fmt.Fprintf(tw, "%.3f\t", r.phases[p])
		}
		fmt.Fprintln(tw)
	}
	total := row{phases: map[string]float64{}}
	for i, r := range rows {
		line(r)
		total.seconds += r.seconds
		total.layers += r.layers
		total.narMB += r.narMB
		total.newMB += r.newMB
		for _, p := range phases {
			total.phases[p] += r.phases[p]
		}
		// The workload is 20 images: their subtotal too.
		if i == 19 && len(rows) > 20 {
			sub := total
			sub.image = "first 20 images"
			line(sub)
		}
	}
	total.image = fmt.Sprintf("total (%d images)", len(rows))
	line(total)
	tw.Flush()
	fmt.Println()
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

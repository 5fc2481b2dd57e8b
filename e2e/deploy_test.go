package e2e

// The Kubernetes deployment (deploy/kubernetes, its GCS overlay
// deploy/kubernetes-gcs and its TLS overlay deploy/kubernetes-tls) and
// the image recipe (deploy/Containerfile),
// checked against the binary built from this tree. No cluster is needed:
// kustomize (built into kubectl) renders the overlays, the Kubernetes API's
// own Go types decode every object strictly (an unknown or misspelt field,
// or a wrong type, fails here as it would at `kubectl apply`), and the
// settings, flags, ports and probes are compared with `nixery --help` and a
// running server. TestDeployAsPod runs Nixery with the Deployment's
// settings the way its pod would run: as the pod's user, on a read-only
// root, with only the Deployment's volumes writable.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/nixery/nixery/internal/need"
	"github.com/nixery/nixery/internal/storage/storagetest"
)

// The kustomizations under deploy/, relative to this package: the base
// (S3), the GCS overlay and the TLS overlay.
var kustomizations = []string{"../deploy/kubernetes", "../deploy/kubernetes-gcs", "../deploy/kubernetes-tls"}

// externalSecrets are Secrets a volume may name that no kustomization
// deploys, with who makes them: applying a kustomization must never
// overwrite a certificate that cert-manager renewed.
var externalSecrets = map[string]string{"nixery-tls": "cert-manager, or kubectl create secret tls"}

const containerfile = "../deploy/Containerfile"

// deployment is what one kustomization renders to: exactly one object of
// each kind.
type deployment struct {
	dir        string
	Deployment *appsv1.Deployment
	Service    *corev1.Service
	PDB        *policyv1.PodDisruptionBudget
	ConfigMap  *corev1.ConfigMap
	Secret     *corev1.Secret
}

// kinds are the objects a deployment may hold, by apiVersion and kind.
var kinds = map[string]func() any{
	"apps/v1 Deployment":            func() any { return new(appsv1.Deployment) },
	"v1 Service":                    func() any { return new(corev1.Service) },
	"policy/v1 PodDisruptionBudget": func() any { return new(policyv1.PodDisruptionBudget) },
	"v1 ConfigMap":                  func() any { return new(corev1.ConfigMap) },
	"v1 Secret":                     func() any { return new(corev1.Secret) },
}

// kustomization is the part of kustomize's file format the deployment
// uses; decoding it strictly makes anything else an error.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
	Patches    []struct {
		Path string `json:"path"`
	} `json:"patches"`
	Images []struct {
		Name    string `json:"name"`
		NewName string `json:"newName"`
		NewTag  string `json:"newTag"`
	} `json:"images"`
}

// help is what `nixery --help` declares.
type help struct {
	text  string
	env   map[string]bool // $NAME and NAME_WITH_UNDERSCORES anywhere in the text
	flags map[string]bool // --name of the flags table
	cmds  map[string]bool // the subcommands of the usage
}

// sdkCredentials are the variables the cloud SDKs read, which --help
// names by the phrase given rather than by listing them. A name is
// accepted only while the help says that phrase.
var sdkCredentials = map[string]string{
	"AWS_ACCESS_KEY_ID":              "credentials the standard AWS way",
	"AWS_SECRET_ACCESS_KEY":          "credentials the standard AWS way",
	"GOOGLE_APPLICATION_CREDENTIALS": "credentials the standard Google way",
}

func readHelp(t *testing.T) *help {
	t.Helper()
	out, err := exec.Command(bin, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("nixery --help: %v\n%s", err, out)
	}
	h := &help{text: string(out), env: map[string]bool{}, flags: map[string]bool{}, cmds: map[string]bool{}}
	for _, m := range regexp.MustCompile(`\$?\b([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|[A-Z][A-Z0-9]+)\b`).FindAllStringSubmatch(h.text, -1) {
		// A bare word must have an underscore to count (not "URL", "JSON");
		// a $NAME counts as it is ($PORT).
		if strings.HasPrefix(m[0], "$") || strings.Contains(m[1], "_") {
			h.env[m[1]] = true
		}
	}
	for _, m := range regexp.MustCompile(`(?m)^\s+--([a-z0-9-]+)\s`).FindAllStringSubmatch(h.text, -1) {
		h.flags[m[1]] = true
	}
	for _, m := range regexp.MustCompile(`(?m)^\s+nixery \[?([a-z]+)\]?`).FindAllStringSubmatch(h.text, -1) {
		h.cmds[m[1]] = true
	}
	if len(h.flags) < 10 || !h.env["NIXERY_STORAGE_BACKEND"] || !h.cmds["serve"] {
		t.Fatalf("nixery --help has an unexpected shape (flags %v, env %v, commands %v):\n%s", h.flags, h.env, h.cmds, h.text)
	}
	return h
}

// knownEnv returns why name is no setting of Nixery's, or "".
func (h *help) knownEnv(name string) string {
	if h.env[name] {
		return ""
	}
	if phrase, ok := sdkCredentials[name]; ok && strings.Contains(h.text, phrase) {
		return ""
	}
	return "is not in nixery --help"
}

// checkArgs checks a command line for nixery: an optional subcommand
// first, then flags that --help lists.
func (h *help) checkArgs(t *testing.T, where string, args []string) {
	t.Helper()
	for i, a := range args {
		switch {
		case strings.HasPrefix(a, "-"):
			name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
			if !h.flags[name] {
				t.Errorf("%s: flag %s is not in nixery --help", where, a)
			}
		case i == 0:
			if !h.cmds[a] {
				t.Errorf("%s: %q is no subcommand of nixery --help", where, a)
			}
		case !strings.HasPrefix(args[i-1], "-") || strings.Contains(args[i-1], "="):
			t.Errorf("%s: stray argument %q", where, a)
		}
	}
}

// defaultOf returns the default --help gives for a flag, as in
// "(default 8080)".
func (h *help) defaultOf(t *testing.T, flag string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^\s+--` + regexp.QuoteMeta(flag) + `\s.*\(default ([^)\s]+)\)$`).FindStringSubmatch(h.text)
	if m == nil {
		t.Fatalf("nixery --help gives no default for --%s", flag)
	}
	return m[1]
}

// decodeStrict decodes one YAML document into v, refusing unknown fields.
// A strategic-merge patch may carry the directive "$patch: delete" at
// its top, or in an element of a list (that element is deleted), which
// is kustomize's, not the object's.
func decodeStrict(doc []byte, v any, patch bool) error {
	if patch {
		var m map[string]any
		if err := yaml.Unmarshal(doc, &m); err != nil {
			return err
		}
		if d, ok := m["$patch"]; ok {
			if d != "delete" {
				return fmt.Errorf("$patch: %v", d)
			}
			delete(m, "$patch")
		}
		if err := dropDeleted(m); err != nil {
			return err
		}
		var err error
		if doc, err = json.Marshal(m); err != nil {
			return err
		}
	}
	return yaml.UnmarshalStrict(doc, v)
}

// dropDeleted removes the list elements of a patch that say "$patch:
// delete" (they name an element of the base to delete).
func dropDeleted(v any) error {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if l, ok := e.([]any); ok {
				kept := l[:0]
				for _, el := range l {
					if m, ok := el.(map[string]any); ok && m["$patch"] != nil {
						if m["$patch"] != "delete" {
							return fmt.Errorf("$patch: %v", m["$patch"])
						}
						continue
					}
					kept = append(kept, el)
				}
				v[k] = kept
			}
			if err := dropDeleted(v[k]); err != nil {
				return err
			}
		}
	case []any:
		for _, e := range v {
			if err := dropDeleted(e); err != nil {
				return err
			}
		}
	}
	return nil
}

// documents splits a YAML stream into its documents.
func documents(t *testing.T, name string, data []byte) [][]byte {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(bytes.TrimSpace(doc)) > 0 {
			docs = append(docs, doc)
		}
	}
}

// decodeObject decodes one Kubernetes object of an expected kind.
func decodeObject(t *testing.T, name string, doc []byte, patch bool) (string, any) {
	t.Helper()
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(doc, &head); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	key := head.APIVersion + " " + head.Kind
	mk, ok := kinds[key]
	if !ok {
		t.Fatalf("%s: unexpected kind %q", name, key)
	}
	obj := mk()
	if err := decodeStrict(doc, obj, patch); err != nil {
		t.Fatalf("%s (%s): %v", name, key, err)
	}
	return key, obj
}

// checkFiles decodes every file of a kustomization directory: the
// kustomization itself, each resource and each patch, and fails for a
// file that it does not list.
func checkFiles(t *testing.T, dir string) *kustomization {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := yaml.UnmarshalStrict(data, &k); err != nil {
		t.Fatalf("%s/kustomization.yaml: %v", dir, err)
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("%s/kustomization.yaml: %s %s", dir, k.APIVersion, k.Kind)
	}
	listed := map[string]bool{"kustomization.yaml": true}
	decode := func(file string, patch bool) {
		listed[file] = true
		data, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatalf("%s lists %s: %v", dir, file, err)
		}
		docs := documents(t, file, data)
		if len(docs) == 0 {
			t.Errorf("%s/%s holds no object", dir, file)
		}
		for _, doc := range docs {
			decodeObject(t, filepath.Join(dir, file), doc, patch)
		}
	}
	for _, r := range k.Resources {
		if st, err := os.Stat(filepath.Join(dir, r)); err == nil && st.IsDir() {
			continue // a base, checked on its own
		}
		decode(r, false)
	}
	for _, p := range k.Patches {
		decode(p.Path, true)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.IsDir() && !listed[e.Name()] {
			t.Errorf("%s/%s is not listed in its kustomization.yaml", dir, e.Name())
		}
	}
	return &k
}

// render runs kustomize (kubectl kustomize) on dir and decodes the result.
func render(t *testing.T, dir string) *deployment {
	t.Helper()
	kubectl := need.Tool(t, "kubectl") // for its built-in kustomize
	out, err := exec.Command(kubectl, "kustomize", dir).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, stderr)
	}
	d := &deployment{dir: dir}
	seen := map[string]int{}
	for _, doc := range documents(t, dir, out) {
		key, obj := decodeObject(t, "kubectl kustomize "+dir, doc, false)
		seen[key]++
		switch o := obj.(type) {
		case *appsv1.Deployment:
			d.Deployment = o
		case *corev1.Service:
			d.Service = o
		case *policyv1.PodDisruptionBudget:
			d.PDB = o
		case *corev1.ConfigMap:
			d.ConfigMap = o
		case *corev1.Secret:
			d.Secret = o
		}
	}
	for key := range kinds {
		if seen[key] != 1 {
			t.Fatalf("%s renders %d objects of %s, want 1 (all: %v)", dir, seen[key], key, seen)
		}
	}
	return d
}

// container returns the Nixery container of the Deployment.
func (d *deployment) container(t *testing.T) *corev1.Container {
	t.Helper()
	cs := d.Deployment.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		t.Fatalf("%s: %d containers, want 1", d.dir, len(cs))
	}
	return &cs[0]
}

// env returns the container's environment as the kubelet makes it:
// envFrom in order, then env (which wins). Every reference must resolve.
func (d *deployment) env(t *testing.T) map[string]string {
	t.Helper()
	c := d.container(t)
	env := map[string]string{}
	for _, from := range c.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			if from.ConfigMapRef.Name != d.ConfigMap.Name {
				t.Errorf("%s: envFrom names ConfigMap %q, which is not deployed", d.dir, from.ConfigMapRef.Name)
			}
			for k, v := range d.ConfigMap.Data {
				env[from.Prefix+k] = v
			}
		case from.SecretRef != nil:
			if from.SecretRef.Name != d.Secret.Name {
				t.Errorf("%s: envFrom names Secret %q, which is not deployed", d.dir, from.SecretRef.Name)
			}
			for k, v := range d.Secret.StringData {
				env[from.Prefix+k] = v
			}
			for k, v := range d.Secret.Data {
				env[from.Prefix+k] = string(v)
			}
		default:
			t.Errorf("%s: envFrom without a source", d.dir)
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.ConfigMapKeyRef != nil && e.ValueFrom.ConfigMapKeyRef.Name == d.ConfigMap.Name:
			env[e.Name] = d.ConfigMap.Data[e.ValueFrom.ConfigMapKeyRef.Key]
		case e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Name == d.Secret.Name:
			env[e.Name] = d.Secret.StringData[e.ValueFrom.SecretKeyRef.Key]
		default:
			t.Errorf("%s: %s comes from something that is not deployed", d.dir, e.Name)
		}
	}
	return env
}

// containerfileSpec is what the Containerfile's final stage declares.
type containerfileSpec struct {
	env        map[string]string
	entrypoint []string
	cmd        []string
	expose     []int
	user       string
	uid, home  string   // of the useradd line
	nixConf    string   // the file copied to /etc/nix/nix.conf, from the repository root
	base       string   // the final stage's FROM image
	packages   []string // what its apt-get install installs
}

func readContainerfile(t *testing.T) *containerfileSpec {
	t.Helper()
	data, err := os.ReadFile(containerfile)
	if err != nil {
		t.Fatal(err)
	}
	// Instructions, with continuation lines joined and comments dropped.
	var instrs []string
	var cur strings.Builder
	for _, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		if s := strings.TrimSpace(cur.String()); s != "" {
			instrs = append(instrs, s)
		}
		cur.Reset()
	}
	// The final stage is what runs.
	last := 0
	for i, in := range instrs {
		if strings.HasPrefix(strings.ToUpper(in), "FROM ") {
			last = i
		}
	}
	spec := &containerfileSpec{env: map[string]string{}}
	jsonArray := func(in, s string) []string {
		var a []string
		if err := json.Unmarshal([]byte(s), &a); err != nil {
			t.Fatalf("Containerfile: %s: not in exec form (a JSON array): %v", in, err)
		}
		return a
	}
	for _, in := range instrs[last:] {
		op, rest, _ := strings.Cut(in, " ")
		rest = strings.TrimSpace(rest)
		switch strings.ToUpper(op) {
		case "FROM":
			spec.base = strings.Fields(rest)[0]
		case "ENV":
			for _, kv := range strings.Fields(rest) {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					t.Fatalf("Containerfile: ENV %s: use the KEY=value form", rest)
				}
				spec.env[k] = v
			}
		case "ENTRYPOINT":
			spec.entrypoint = jsonArray(in, rest)
		case "CMD":
			spec.cmd = jsonArray(in, rest)
		case "EXPOSE":
			for _, p := range strings.Fields(rest) {
				n, err := strconv.Atoi(strings.TrimSuffix(p, "/tcp"))
				if err != nil {
					t.Fatalf("Containerfile: EXPOSE %s", p)
				}
				spec.expose = append(spec.expose, n)
			}
		case "USER":
			spec.user = rest
		case "COPY":
			if f := strings.Fields(rest); len(f) == 2 && f[1] == "/etc/nix/nix.conf" {
				spec.nixConf = f[0]
			}
		case "RUN":
			if m := regexp.MustCompile(`useradd .*--uid (\d+) .*--home-dir (\S+)`).FindStringSubmatch(rest); m != nil {
				spec.uid, spec.home = m[1], m[2]
			}
			if _, install, ok := strings.Cut(rest, "apt-get install"); ok {
				install, _, _ = strings.Cut(install, "&&")
				for _, f := range strings.Fields(install) {
					if !strings.HasPrefix(f, "-") {
						spec.packages = append(spec.packages, f)
					}
				}
			}
		}
	}
	return spec
}

// debianNix is the nix-bin of each Debian release, as Debian ships it.
var debianNix = map[string]string{"bookworm": "2.8", "trixie": "2.26"}

// nixpkgsMinNix is the oldest Nix that nixpkgs accepts (its lib/minver.nix).
const nixpkgsMinNix = "2.18"

// TestImageNix checks that the shipped image runs a Nix that nixpkgs
// accepts, that CI tests that Nix in a root made from the image's own
// packages, and that the documentation says so.
func TestImageNix(t *testing.T) {
	image := readContainerfile(t)
	release, ok := strings.CutPrefix(image.base, "docker.io/library/debian:")
	release = strings.TrimSuffix(release, "-slim")
	nixVersion := debianNix[release]
	if !ok || nixVersion == "" {
		t.Fatalf("Containerfile: the image is based on %q, want a Debian release whose nix-bin is known (%v)", image.base, debianNix)
	}
	if versionLess(nixVersion, nixpkgsMinNix) {
		t.Errorf("Containerfile: %s's Nix %s is older than nixpkgs accepts (%s)", release, nixVersion, nixpkgsMinNix)
	}

	// scripts/nix-root makes the test root from the image's packages.
	script, err := os.ReadFile("../scripts/nix-root")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^image_packages=\(([^)]*)\)`).FindSubmatch(script)
	if m == nil {
		t.Fatal("scripts/nix-root: no image_packages=(…)")
	}
	rootPkgs := strings.Fields(string(m[1]))
	slices.Sort(rootPkgs)
	imagePkgs := slices.Sorted(slices.Values(image.packages))
	if !slices.Equal(rootPkgs, imagePkgs) {
		t.Errorf("scripts/nix-root installs %v, the Containerfile %v: the test root is the image's", rootPkgs, imagePkgs)
	}

	// CI runs the suite in a root of the image's release.
	ci, err := os.ReadFile("../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ci), "scripts/in-root "+release+" bash scripts/test") {
		t.Errorf(".ci/run does not run the suite in a %s root (scripts/in-root %s bash scripts/test)", release, release)
	}

	// The Kubernetes page names the image's base and Nix, and the README's
	// Nix table the version.
	for _, doc := range []struct{ file, want string }{
		{"docs/fleet.md", "`debian:" + release + "-slim` with `nix-bin` (Nix " + nixVersion},
		{"README.md", "| " + nixVersion + " |"},
	} {
		text, err := os.ReadFile("../" + doc.file)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(text), doc.want) {
			t.Errorf("%s does not say %q", doc.file, doc.want)
		}
	}
}

// versionLess compares dotted version numbers.
func versionLess(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < max(len(as), len(bs)); i++ {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			return x < y
		}
	}
	return false
}

// TestDeployManifests decodes every manifest and checks it against
// nixery --help and the Containerfile.
func TestDeployManifests(t *testing.T) {
	needServer(t)
	h := readHelp(t)
	image := readContainerfile(t)

	// The image: its settings and command line exist, it runs serve.
	for k := range image.env {
		if why := h.knownEnv(k); why != "" {
			t.Errorf("Containerfile: ENV %s %s", k, why)
		}
	}
	if len(image.entrypoint) != 1 || filepath.Base(image.entrypoint[0]) != "nixery" {
		t.Errorf("Containerfile: ENTRYPOINT %q, want the nixery binary", image.entrypoint)
	}
	if len(image.cmd) == 0 || image.cmd[0] != "serve" {
		t.Errorf("Containerfile: CMD %q, want serve", image.cmd)
	}
	h.checkArgs(t, "Containerfile CMD", image.cmd)
	if image.uid == "" || image.user != image.uid+":"+image.uid {
		t.Errorf("Containerfile: USER %q and useradd --uid %q: want the created user, numerically", image.user, image.uid)
	}
	if image.nixConf != "deploy/nix.conf" {
		t.Errorf("Containerfile: /etc/nix/nix.conf comes from %q, want deploy/nix.conf", image.nixConf)
	}

	for _, dir := range kustomizations {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			k := checkFiles(t, dir)
			d := render(t, dir)
			c := d.container(t)
			pod := d.Deployment.Spec.Template

			// Every variable and flag exists in this tree's binary.
			env := d.env(t)
			for name := range env {
				if why := h.knownEnv(name); why != "" {
					t.Errorf("%s: environment variable %s %s", dir, name, why)
				}
			}
			if len(c.Command) > 0 {
				t.Errorf("%s: command %q replaces the image's entrypoint; use args", dir, c.Command)
			}
			h.checkArgs(t, dir+" args", c.Args)

			// The image that kustomization.yaml names is the one deployed.
			if len(k.Images) == 1 {
				want := k.Images[0].NewName + ":" + k.Images[0].NewTag
				if c.Image != want {
					t.Errorf("%s: image %q, want %q (kustomization images)", dir, c.Image, want)
				}
			} else if dir == kustomizations[0] {
				t.Errorf("%s: kustomization.yaml names %d images, want 1", dir, len(k.Images))
			}

			// Ports: Nixery listens on the container port, the image
			// exposes it, the Service and the probes send to it.
			listen := h.defaultOf(t, "port")
			if v, ok := env["PORT"]; ok {
				listen = v
			}
			for i, a := range c.Args {
				if v, ok := strings.CutPrefix(a, "--port="); ok {
					listen = v
				} else if a == "--port" && i+1 < len(c.Args) {
					listen = c.Args[i+1]
				}
			}
			if len(c.Ports) != 1 || strconv.Itoa(int(c.Ports[0].ContainerPort)) != listen {
				t.Fatalf("%s: container ports %+v, want one: %s, where Nixery listens", dir, c.Ports, listen)
			}
			port := c.Ports[0]
			if !slices.Contains(image.expose, int(port.ContainerPort)) {
				t.Errorf("Containerfile: EXPOSE %v, want %d", image.expose, port.ContainerPort)
			}
			resolves := func(p intstr.IntOrString) bool {
				if p.Type == intstr.String {
					return p.StrVal == port.Name
				}
				return p.IntVal == port.ContainerPort
			}
			if len(d.Service.Spec.Ports) == 0 {
				t.Errorf("%s: the Service has no ports", dir)
			}
			for _, sp := range d.Service.Spec.Ports {
				if !resolves(sp.TargetPort) {
					t.Errorf("%s: Service port %d targets %s, not the container port %s/%d", dir, sp.Port, sp.TargetPort.String(), port.Name, port.ContainerPort)
				}
			}

			// Probes: liveness on /healthz, readiness on /readyz, at the
			// container port (TestDeployProbes asks a server).
			for _, p := range []struct {
				what  string
				probe *corev1.Probe
				path  string
			}{{"livenessProbe", c.LivenessProbe, "/healthz"}, {"readinessProbe", c.ReadinessProbe, "/readyz"}} {
				if p.probe == nil || p.probe.HTTPGet == nil {
					t.Errorf("%s: no HTTP %s", dir, p.what)
					continue
				}
				if p.probe.HTTPGet.Path != p.path || !resolves(p.probe.HTTPGet.Port) {
					t.Errorf("%s: %s asks %s at %s, want %s at the container port", dir, p.what, p.probe.HTTPGet.Path, p.probe.HTTPGet.Port.String(), p.path)
				}
			}
			// With NIXERY_TLS_CERT the port speaks HTTPS only, and so must
			// the probes; the certificate and key come from a Secret
			// mounted read-only.
			wantScheme := corev1.URISchemeHTTP
			if env["NIXERY_TLS_CERT"] != "" {
				wantScheme = corev1.URISchemeHTTPS
			}
			for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe} {
				if p != nil && p.HTTPGet != nil && p.HTTPGet.Scheme != wantScheme && (p.HTTPGet.Scheme != "" || wantScheme != corev1.URISchemeHTTP) {
					t.Errorf("%s: a probe asks by %q, want %s", dir, p.HTTPGet.Scheme, wantScheme)
				}
			}
			for _, name := range []string{"NIXERY_TLS_CERT", "NIXERY_TLS_KEY", "NIXERY_TLS_CLIENT_CA"} {
				file := env[name]
				if file == "" {
					continue
				}
				fromSecret := slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
					return m.ReadOnly && strings.HasPrefix(file, m.MountPath+"/") &&
						slices.ContainsFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name && v.Secret != nil })
				})
				if !fromSecret {
					t.Errorf("%s: %s=%s is not in a Secret mounted read-only", dir, name, file)
				}
			}

			// /readyz may take 10 s per check (internal/readiness).
			if rp := c.ReadinessProbe; rp != nil && rp.TimeoutSeconds <= 10 {
				t.Errorf("%s: readinessProbe timeoutSeconds %d: /readyz may take 10 s", dir, rp.TimeoutSeconds)
			}

			// Selectors: two replicas, one Service and one budget for them.
			labels := pod.Labels
			matches := func(sel map[string]string) bool {
				for k, v := range sel {
					if labels[k] != v {
						return false
					}
				}
				return len(sel) > 0
			}
			if r := d.Deployment.Spec.Replicas; r == nil || *r != 2 {
				t.Errorf("%s: replicas %v, want 2", dir, r)
			}
			if !matches(d.Deployment.Spec.Selector.MatchLabels) || !matches(d.Service.Spec.Selector) || !matches(d.PDB.Spec.Selector.MatchLabels) {
				t.Errorf("%s: selectors (Deployment %v, Service %v, PodDisruptionBudget %v) do not all match the pods' labels %v",
					dir, d.Deployment.Spec.Selector.MatchLabels, d.Service.Spec.Selector, d.PDB.Spec.Selector.MatchLabels, labels)
			}
			if m := d.PDB.Spec.MinAvailable; m == nil || m.String() != "1" {
				t.Errorf("%s: PodDisruptionBudget minAvailable %v, want 1", dir, m)
			}

			// Resources: requests and limits of CPU and memory.
			for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourceEphemeralStorage} {
				req, lim := c.Resources.Requests[r], c.Resources.Limits[r]
				if req.IsZero() || lim.IsZero() || req.Cmp(lim) > 0 {
					t.Errorf("%s: %s request %s, limit %s: want both, request ≤ limit", dir, r, req.String(), lim.String())
				}
			}

			// A build started before SIGTERM may run NIX_TIMEOUT seconds.
			timeout := h.defaultOf(t, "nix-timeout")
			if v, ok := env["NIX_TIMEOUT"]; ok {
				timeout = v
			}
			nixTimeout, err := strconv.ParseInt(timeout, 10, 64)
			if err != nil {
				t.Fatalf("%s: NIX_TIMEOUT %q", dir, timeout)
			}
			if g := pod.Spec.TerminationGracePeriodSeconds; g == nil || *g <= nixTimeout {
				t.Errorf("%s: terminationGracePeriodSeconds %v, want more than NIX_TIMEOUT (%d s)", dir, g, nixTimeout)
			}

			// Security: non-root (the image's user), nothing to escalate
			// to, a read-only root with volumes where Nix and Nixery write.
			psc, sc := pod.Spec.SecurityContext, c.SecurityContext
			if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || strconv.FormatInt(*psc.RunAsUser, 10) != image.uid {
				t.Errorf("%s: pod securityContext %+v: want runAsNonRoot and runAsUser %s (the image's user)", dir, psc, image.uid)
			}
			if psc != nil && (psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault) {
				t.Errorf("%s: want seccompProfile RuntimeDefault", dir)
			}
			if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
				sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
				sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
				t.Errorf("%s: container securityContext %+v: want no privilege escalation, a read-only root and all capabilities dropped", dir, sc)
			}
			volumes := map[string]corev1.Volume{}
			for _, v := range pod.Spec.Volumes {
				volumes[v.Name] = v
				if v.Secret != nil && v.Secret.SecretName != d.Secret.Name && externalSecrets[v.Secret.SecretName] == "" {
					t.Errorf("%s: volume %s names Secret %q, which is not deployed", dir, v.Name, v.Secret.SecretName)
				}
			}
			mounts := map[string]bool{}
			for _, m := range c.VolumeMounts {
				if _, ok := volumes[m.Name]; !ok {
					t.Errorf("%s: mount %s names no volume (%s)", dir, m.MountPath, m.Name)
				}
				if !m.ReadOnly {
					mounts[m.MountPath] = true
				}
			}
			for _, p := range []string{"/nix", "/tmp", image.env["XDG_CACHE_HOME"]} {
				if !mounts[p] {
					t.Errorf("%s: nothing writable is mounted at %q (the root is read-only)", dir, p)
				}
			}
			if v, ok := volumes["nix"]; !ok || v.EmptyDir == nil {
				t.Errorf("%s: want the Nix store in an emptyDir volume named nix", dir)
			}
			if pod.Spec.EnableServiceLinks == nil || *pod.Spec.EnableServiceLinks {
				t.Errorf("%s: want enableServiceLinks false: a Service named nixery would add NIXERY_* variables", dir)
			}
		})
	}
}

// TestDeployProbes asks each probe of the Deployment on a running server,
// and those of the TLS overlay over HTTPS on a server with TLS.
func TestDeployProbes(t *testing.T) {
	needServer(t)
	for _, dir := range []string{kustomizations[0], "../deploy/kubernetes-tls"} {
		d := render(t, dir)
		c := d.container(t)
		s := &server
		if d.env(t)["NIXERY_TLS_CERT"] != "" {
			f := newTLSFiles(t)
			tmp := t.TempDir()
			var err error
			if s, err = startWith(tmp, filepath.Join(tmp, "storage"), f.client(nil, false), f.env()...); err != nil {
				t.Fatal(err)
			}
			defer s.stop()
		}
		for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
			if p == nil || p.HTTPGet == nil {
				continue
			}
			if got, want := strings.ToLower(string(p.HTTPGet.Scheme)), strings.Split(s.url("/"), ":")[0]; got != want && (got != "" || want != "http") {
				t.Errorf("%s: %s by %s, the server speaks %s", dir, p.HTTPGet.Path, got, want)
			}
			resp, body := s.get(t, "GET", p.HTTPGet.Path, "")
			if resp.StatusCode != 200 {
				t.Errorf("%s: GET %s: %d %s", dir, p.HTTPGet.Path, resp.StatusCode, body)
			}
		}
	}
}

// TestDeployAsPod runs Nixery with the settings of deploy/kubernetes the
// way its pod runs them, and builds an image: as the pod's runAsUser (a
// user of the image's passwd, no capabilities, no_new_privs) on a
// read-only view of this machine's root, where only the Deployment's
// volumes (empty directories, as emptyDir gives them) are writable and
// /etc/nix/nix.conf is deploy/nix.conf. The environment is the
// container's (ConfigMap, Secret, the image's ENV) with two things
// replaced, since nothing here reaches the internet: the bucket is a
// real S3 test server on 127.0.0.1, and the package source is the
// built-in demo set. It needs root, unshare, chroot and setpriv.
func TestDeployAsPod(t *testing.T) {
	needServer(t)
	for _, tool := range []string{"unshare", "chroot", "setpriv"} {
		need.Tool(t, tool)
	}
	d := render(t, kustomizations[0])
	c := d.container(t)
	image := readContainerfile(t)
	psc := d.Deployment.Spec.Template.Spec.SecurityContext
	if psc == nil || psc.RunAsUser == nil || psc.RunAsGroup == nil {
		t.Fatal("the pod sets no runAsUser and runAsGroup")
	}
	uid, gid := *psc.RunAsUser, *psc.RunAsGroup
	s3 := storagetest.StartS3(t)
	tmp := t.TempDir()

	// The pod's file system: the image's user, its nix.conf, the binary
	// where the image has it, and one empty directory per volume.
	write := func(name string, data []byte, mode os.FileMode) string {
		p := filepath.Join(tmp, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	readHost := func(p string) []byte {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	passwd := write("etc/passwd", append(readHost("/etc/passwd"),
		fmt.Sprintf("nixery:x:%d:%d:Nixery:%s:/usr/sbin/nologin\n", uid, gid, image.home)...), 0o644)
	group := write("etc/group", append(readHost("/etc/group"), fmt.Sprintf("nixery:x:%d:\n", gid)...), 0o644)
	binary := readHost(bin)
	binDir := filepath.Join(tmp, "bin")
	write("bin/nixery", binary, 0o755)
	binds := []string{
		passwd, "/etc/passwd", group, "/etc/group",
		filepath.Join("..", image.nixConf), "/etc/nix/nix.conf",
		binDir, filepath.Dir(image.entrypoint[0]),
	}
	volumes := map[string]string{}
	for _, m := range c.VolumeMounts {
		dir := filepath.Join(tmp, "volumes", m.Name)
		if err := os.MkdirAll(dir, 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o777); err != nil { // as the kubelet makes an emptyDir
			t.Fatal(err)
		}
		volumes[m.MountPath] = dir
		binds = append(binds, dir, m.MountPath)
	}
	for i := 0; i < len(binds); i += 2 {
		abs, err := filepath.Abs(binds[i])
		if err != nil {
			t.Fatal(err)
		}
		binds[i] = abs
		if _, err := os.Stat(binds[i+1]); err != nil {
			t.Fatalf("%s must exist on this machine to be mounted over: %v", binds[i+1], err)
		}
	}

	env := map[string]string{"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": image.home}
	for k, v := range image.env {
		env[k] = v
	}
	for k, v := range d.env(t) {
		env[k] = v
	}
	for k, v := range map[string]string{
		"NIXERY_CHANNEL": "", "NIXERY_PKGS_REPO": "", "NIXERY_PKGS_PATH": "",
		"NIXERY_S3_BUCKET": s3.Bucket, "NIXERY_S3_ENDPOINT": s3.Endpoint, "NIXERY_S3_PATH_STYLE": "true",
		"NIXERY_S3_REGION": s3.Region, "AWS_ACCESS_KEY_ID": s3.AccessKey, "AWS_SECRET_ACCESS_KEY": s3.SecretKey,
	} {
		env[k] = v
	}
	var envList []string
	for k, v := range env {
		envList = append(envList, k+"="+v)
	}
	slices.Sort(envList)
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	args := append(append([]string{}, c.Args...), "--host", "127.0.0.1", "--port", strconv.Itoa(port))

	// In a mount namespace of its own: bind the root read-only, the
	// devices and proc, then the files and volumes; chroot there and
	// drop to the pod's user. unshare, chroot, setpriv and env each exec
	// the next, so the process is Nixery in the end.
	root := filepath.Join(tmp, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	script := `set -e
R=$1; shift
mount --bind / "$R"
mount -o remount,bind,ro "$R"
mount --rbind /dev "$R/dev"
mount --bind /proc "$R/proc"
while [ "$1" != -- ]; do mount --bind "$1" "$R$2"; shift 2; done
shift
exec chroot "$R" "$@"`
	cmdline := []string{"-m", "--propagation", "private", "sh", "-c", script, "sh", root}
	cmdline = append(append(cmdline, binds...), "--",
		"setpriv", "--reuid", strconv.FormatInt(uid, 10), "--regid", strconv.FormatInt(gid, 10), "--clear-groups",
		"--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "env", "-i")
	cmdline = append(append(append(cmdline, envList...), image.entrypoint...), args...)
	log := new(lockedBuffer)
	cmd := exec.Command("unshare", cmdline...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}()
	pod := &nixery{addr: fmt.Sprintf("127.0.0.1:%d", port), log: log}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + pod.addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		select {
		case <-exited:
			t.Fatalf("nixery as the pod exited at start-up:\n%s", log)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("nixery as the pod did not answer within 60s:\n%s", log)
		}
	}

	// It is the pod's user, and the root is read-only to it.
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("\nUid:\t%d\t%d\t%d\t%d\n", uid, uid, uid, uid); !strings.Contains(string(status), want) ||
		!strings.Contains(string(status), "\nCapEff:\t0000000000000000\n") || !strings.Contains(string(status), "\nNoNewPrivs:\t1\n") {
		t.Errorf("the pod's process is not unprivileged uid %d:\n%s", uid, status)
	}

	for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe} {
		resp, body := pod.get(t, "GET", p.HTTPGet.Path, "")
		if resp.StatusCode != 200 {
			t.Errorf("GET %s: %d %s\n%s", p.HTTPGet.Path, resp.StatusCode, body, tail(log.String(), 20))
		}
	}
	// A build: Nix realises the closure in the empty /nix as the pod's
	// user, the layers go to the bucket.
	resp, body := pod.get(t, "GET", "/v2/shell/hello/manifests/latest", "application/vnd.oci.image.manifest.v1+json")
	if resp.StatusCode != 200 {
		t.Fatalf("build as the pod: %d %s\n%s", resp.StatusCode, body, tail(log.String(), 30))
	}
	store := filepath.Join(volumes["/nix"], "store")
	st, err := os.Stat(store)
	if err != nil {
		t.Fatalf("the pod's /nix volume has no store: %v", err)
	}
	if owner := st.Sys().(*syscall.Stat_t).Uid; int64(owner) != uid {
		t.Errorf("the pod's Nix store belongs to uid %d, want %d", owner, uid)
	}
	entries, err := os.ReadDir(store)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.ContainsFunc(names, func(n string) bool { return strings.Contains(n, "-hello-") && !strings.HasSuffix(n, ".drv") }) {
		t.Errorf("the pod's /nix volume holds no hello: %v", names)
	}
}

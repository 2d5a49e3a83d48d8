package deploy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
)

// needTool finds a checker binary: missing, it skips the test, unless CI=true
// and .ci/run installs it (pkg names the Debian package), where it fails.
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if pkg != "" && os.Getenv("CI") == "true" {
		t.Fatalf("%s is missing and CI=true: .ci/run installs the Debian package %s", name, pkg)
	}
	t.Skipf("%s not installed (Debian package %s)", name, pkg)
	return ""
}

// TestComposePublishesOnlyDNSBeyondLoopback: the API is plain HTTP with
// Basic auth, the ops port has no auth at all; only DNS must be reachable
// from other hosts.
func TestComposePublishesOnlyDNSBeyondLoopback(t *testing.T) {
	services, _ := yamlDocs(t, "docker-compose.yml")[0]["services"].(map[string]any)
	n := 0
	for name, svc := range services {
		ports, _ := get(svc, "ports").([]any)
		for _, p := range ports {
			spec := str(p)
			n++
			parts := strings.Split(strings.SplitN(spec, "/", 2)[0], ":")
			dns := strings.HasSuffix(spec, ":5353/udp") || strings.HasSuffix(spec, ":5353/tcp")
			switch {
			case dns && len(parts) != 2:
				t.Errorf("%s publishes DNS as %q: DNS must listen on every interface (host:container only)", name, spec)
			case !dns && (len(parts) != 3 || parts[0] != "127.0.0.1"):
				t.Errorf("%s publishes %q on every interface, want 127.0.0.1:host:container", name, spec)
			}
		}
	}
	if n < 9 {
		t.Errorf("only %d published ports found; the check did not see the compose file's ports", n)
	}
	for name, svc := range services {
		if img := str(get(svc, "image")); img == "" || !strings.Contains(img, ":") || strings.HasSuffix(img, ":latest") {
			t.Errorf("%s image %q has no fixed tag", name, img)
		}
	}
}

// TestComposeConfig lets Compose itself validate the file: the docker
// compose plugin where installed, else Debian's docker-compose (1.x, which
// .ci/run installs).
func TestComposeConfig(t *testing.T) {
	check := func(t *testing.T, file string) ([]byte, error) {
		t.Helper()
		var cmd *exec.Cmd
		if docker, err := exec.LookPath("docker"); err == nil && exec.Command(docker, "compose", "version").Run() == nil {
			cmd = exec.Command(docker, "compose", "-f", file, "config", "--quiet")
		} else {
			cmd = exec.Command(needTool(t, "docker-compose", "docker-compose"), "-f", file, "config", "--quiet")
		}
		cmd.Env = append(os.Environ(), "COMPOSE_PROJECT_NAME=dkimd-test")
		return cmd.CombinedOutput()
	}
	if out, err := check(t, "docker-compose.yml"); err != nil {
		t.Fatalf("compose config: %v\n%s", err, out)
	}
	t.Run("it notices a bad key", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "compose.yml")
		broken := strings.Replace(readFile(t, "docker-compose.yml"), "    ports:\n", "    portz:\n", 1)
		if err := os.WriteFile(bad, []byte(broken), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := check(t, bad); err == nil {
			t.Errorf("compose config accepted a file with portz:\n%s", out)
		}
	})
}

// TestKubernetesExposure: only DNS is a LoadBalancer; the API is ClusterIP
// behind an Ingress that terminates TLS; images have fixed tags; secrets
// reach dkimd as files.
func TestKubernetesExposure(t *testing.T) {
	objs := loadKubernetes(t)
	svcs := map[string]map[string]any{}
	for _, s := range objs["Service"] {
		svcs[str(get(s, "metadata", "name"))] = s
	}
	for name, s := range svcs {
		typ := str(get(s, "spec", "type"))
		ports, _ := get(s, "spec", "ports").([]any)
		if typ != "LoadBalancer" && typ != "NodePort" {
			continue
		}
		for _, p := range ports {
			if fmt.Sprint(get(p, "port")) != "53" {
				t.Errorf("service %s (%s) exposes port %v outside the cluster; only DNS may be", name, typ, get(p, "port"))
			}
		}
	}
	var apiSvc string
	for name, s := range svcs {
		for _, p := range get(s, "spec", "ports").([]any) {
			if str(get(p, "targetPort")) == "api" {
				apiSvc = name
				if typ := str(get(s, "spec", "type")); typ != "ClusterIP" {
					t.Errorf("API service %s is %s, want ClusterIP", name, typ)
				}
			}
		}
	}
	if len(objs["Ingress"]) != 1 {
		t.Fatalf("%d Ingress objects, want one for the API", len(objs["Ingress"]))
	}
	ing := objs["Ingress"][0]
	if get(ing, "spec", "tls", 0, "secretName") == nil || get(ing, "spec", "tls", 0, "hosts", 0) == nil {
		t.Errorf("Ingress has no TLS host and certificate secret")
	}
	if host := str(get(ing, "spec", "rules", 0, "host")); host == "" || !strings.Contains(fmt.Sprint(get(ing, "spec", "tls")), host) {
		t.Errorf("Ingress rule host %q is not covered by its TLS section", host)
	}
	if b := str(get(ing, "spec", "rules", 0, "http", "paths", 0, "backend", "service", "name")); b == "" || b != apiSvc {
		t.Errorf("Ingress backend %q, want the API service %q", b, apiSvc)
	}

	pod := get(objs["Deployment"][0], "spec", "template", "spec")
	for _, list := range []string{"initContainers", "containers"} {
		cs, _ := get(pod, list).([]any)
		for _, c := range cs {
			img := str(get(c, "image"))
			if i := strings.LastIndex(img, ":"); i < 0 || img[i+1:] == "latest" || strings.Contains(img[i+1:], "/") {
				t.Errorf("%s %v image %q has no fixed tag", list, get(c, "name"), img)
			}
		}
	}
	if fmt.Sprint(get(pod, "containers", 0, "env")) != "<nil>" && strings.Contains(fmt.Sprint(get(pod, "containers", 0, "env")), "DKIMD_SIGN_TOKEN ") {
		t.Errorf("the sign token is passed in the environment; use DKIMD_SIGN_TOKEN_FILE")
	}
	cm := objs["ConfigMap"][0]
	if !strings.HasPrefix(str(get(cm, "data", "DKIMD_SIGN_TOKEN_FILE")), "/run/dkimd/") {
		t.Errorf("ConfigMap DKIMD_SIGN_TOKEN_FILE = %v, want the copied secret under /run/dkimd", get(cm, "data", "DKIMD_SIGN_TOKEN_FILE"))
	}
	for _, d := range yamlDocs(t, filepath.Join("kubernetes", "kustomization.yaml")) {
		for _, img := range asList(d["images"]) {
			if tag := str(get(img, "newTag")); tag == "" || tag == "latest" {
				t.Errorf("kustomization image %v newTag %q, want a fixed release tag", get(img, "name"), tag)
			}
		}
	}
}

func asList(v any) []any { l, _ := v.([]any); return l }

// k8sTypes are the API types of every kind deploy/kubernetes uses.
var k8sTypes = map[string]func() any{
	"v1/Namespace":                       func() any { return &corev1.Namespace{} },
	"v1/ConfigMap":                       func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                          func() any { return &corev1.Secret{} },
	"v1/Service":                         func() any { return &corev1.Service{} },
	"apps/v1/Deployment":                 func() any { return &appsv1.Deployment{} },
	"policy/v1/PodDisruptionBudget":      func() any { return &policyv1.PodDisruptionBudget{} },
	"networking.k8s.io/v1/NetworkPolicy": func() any { return &networkingv1.NetworkPolicy{} },
	"networking.k8s.io/v1/Ingress":       func() any { return &networkingv1.Ingress{} },
}

// TestKubernetesSchema decodes every manifest into the Kubernetes API's own
// Go types, refusing unknown fields: a misspelt or misplaced field, a wrong
// type or a bad quantity fails here as the API server would refuse it.
// (kubeconform is no Debian package, and kubectl --dry-run=client needs an
// API server for its schemas, so this is the offline schema check.)
func TestKubernetesSchema(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("kubernetes", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range files {
		for i, d := range yamlDocs(t, f) {
			kind := str(d["apiVersion"]) + "/" + str(d["kind"])
			if kind == "kustomize.config.k8s.io/v1beta1/Kustomization" {
				continue
			}
			t.Run(fmt.Sprintf("%s#%d %s", filepath.Base(f), i, d["kind"]), func(t *testing.T) {
				mk, ok := k8sTypes[kind]
				if !ok {
					t.Fatalf("%s: no API type known for %s (add it to k8sTypes)", f, kind)
				}
				if err := strictK8s(d, mk()); err != nil {
					t.Errorf("%s: %v", f, err)
				}
			})
			n++
		}
	}
	if n < 8 {
		t.Errorf("only %d objects checked", n)
	}
	t.Run("the check refuses a misplaced field", func(t *testing.T) {
		bad := map[string]any{"apiVersion": "v1", "kind": "Service", "metadata": map[string]any{"name": "x"},
			"spec": map[string]any{"type": "ClusterIP", "port": 8080}}
		if err := strictK8s(bad, &corev1.Service{}); err == nil {
			t.Error("spec.port (belongs in spec.ports) was accepted")
		}
	})
}

func strictK8s(doc map[string]any, into any) error {
	b, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(into)
}

var credRef = regexp.MustCompile(`%d/([A-Za-z0-9_.-]+)`)

// unitLines is the non-comment lines of a unit file.
func unitLines(t *testing.T, path string) []string {
	t.Helper()
	var out []string
	sc := bufio.NewScanner(strings.NewReader(readFile(t, path)))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") && !strings.HasPrefix(l, ";") {
			out = append(out, l)
		}
	}
	return out
}

// TestSystemdCredentials: secrets come in through LoadCredential= and the
// DKIMD_*_FILE variables, every %d/ID names a credential the unit (or its
// drop-in) loads, and %d never appears in an EnvironmentFile, where systemd
// does not expand it.
func TestSystemdCredentials(t *testing.T) {
	for _, f := range []string{"dkimd.service", "postgres.conf"} {
		t.Run(f, func(t *testing.T) {
			path := filepath.Join("systemd", f)
			checkEnvNames(t, f, readFile(t, path))
			loaded := map[string]bool{}
			lines := unitLines(t, path)
			for _, l := range lines {
				if v, ok := strings.CutPrefix(l, "LoadCredential="); ok {
					id, src, _ := strings.Cut(v, ":")
					loaded[id] = true
					if !strings.HasPrefix(src, "/etc/dkimd/") {
						t.Errorf("credential %s from %q, want a file under /etc/dkimd", id, src)
					}
				}
			}
			if len(loaded) == 0 {
				t.Fatal("no LoadCredential=")
			}
			for _, l := range lines {
				if strings.HasPrefix(l, "EnvironmentFile=") && strings.Contains(l, "%d") {
					t.Errorf("%q: %%d is not expanded in an EnvironmentFile", l)
				}
				for _, m := range credRef.FindAllStringSubmatch(l, -1) {
					if !loaded[m[1]] {
						t.Errorf("%q refers to credential %s, which no LoadCredential= loads", l, m[1])
					}
					if !regexp.MustCompile(`^Environment=DKIMD_[A-Z_]+_FILE=%d/`).MatchString(l) {
						t.Errorf("%q: a credential goes to dkimd as a DKIMD_*_FILE variable", l)
					}
				}
				if strings.HasPrefix(l, "Environment=DKIMD_SIGN_TOKEN=") || strings.Contains(l, "--sign-token ") || strings.Contains(l, "--sign-token=") {
					t.Errorf("%q puts the sign token itself where ps and /proc show it", l)
				}
			}
		})
	}
	set := strings.Join(unitLines(t, filepath.Join("systemd", "dkimd.service")), "\n")
	if !strings.Contains(set, "Environment=DKIMD_SIGN_TOKEN_FILE=%d/sign-token") {
		t.Errorf("dkimd.service does not hand the sign token in as a credential file")
	}
	pg := strings.Join(unitLines(t, filepath.Join("systemd", "postgres.conf")), "\n")
	for _, want := range []string{"[Service]", "DKIMD_MASTER_KEY_FILE=%d/kek", "DKIMD_OPERATOR_TOKEN_FILE=%d/operator-token"} {
		if !strings.Contains(pg, want) {
			t.Errorf("postgres.conf lacks %s", want)
		}
	}
}

// TestSystemdAnalyzeVerify runs systemd's own checker over the unit and
// its drop-in. systemd-analyze also wants ExecStart's binary to exist, so it
// checks a copy that starts /bin/true; anything else it prints fails.
func TestSystemdAnalyzeVerify(t *testing.T) {
	sa := needTool(t, "systemd-analyze", "systemd")
	verify := func(t *testing.T, unit, dropin string) string {
		t.Helper()
		dir := t.TempDir()
		unit = strings.Replace(unit, "ExecStart=/usr/local/bin/dkimd", "ExecStart=/bin/true", 1)
		if err := os.WriteFile(filepath.Join(dir, "dkimd.service"), []byte(unit), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(filepath.Join(dir, "dkimd.service.d"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "dkimd.service.d", "postgres.conf"), []byte(dropin), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(sa, "verify", filepath.Join(dir, "dkimd.service"))
		cmd.Env = append(os.Environ(), "SYSTEMD_UNIT_PATH="+dir+":")
		out, err := cmd.CombinedOutput()
		if err != nil && len(out) == 0 {
			return err.Error()
		}
		return strings.TrimSpace(string(out))
	}
	unit, dropin := readFile(t, filepath.Join("systemd", "dkimd.service")), readFile(t, filepath.Join("systemd", "postgres.conf"))
	if out := verify(t, unit, dropin); out != "" {
		t.Errorf("systemd-analyze verify:\n%s", out)
	}
	t.Run("it notices a bad key", func(t *testing.T) {
		if out := verify(t, unit, dropin+"LoadCredentails=x:/etc/dkimd/x\n"); !strings.Contains(out, "LoadCredentails") {
			t.Errorf("systemd-analyze verify said %q of a misspelt key", out)
		}
	})
}

// Package deploy_test checks the deployment files against the dkimd they
// deploy: the YAML parses and carries what an orchestrator needs, every
// DKIMD_* variable they set is a real flag's twin, and the alert rules and
// dashboard only use metric names that a running dkimd exports.
package deploy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"dkimd/internal/config"
)

// envTwins is every DKIMD_* variable dkimd reads.
func envTwins(t *testing.T) map[string]bool {
	t.Helper()
	var c config.Config
	fs := flag.NewFlagSet("deploy", flag.ContinueOnError)
	c.FlagSet(fs, func(string) string { return "" })
	out := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) {
		out["DKIMD_"+strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))] = true
	})
	return out
}

var envRef = regexp.MustCompile(`\bDKIMD_[A-Z0-9_]+`)

// checkEnvNames fails for DKIMD_* names in text that dkimd does not read,
// the typo that silently leaves a setting at its default.
func checkEnvNames(t *testing.T, file string, text string) {
	t.Helper()
	known := envTwins(t)
	for _, name := range envRef.FindAllString(text, -1) {
		if !known[name] {
			t.Errorf("%s sets %s, which is no dkimd flag's environment twin", file, name)
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// yamlDocs parses every document of a YAML file into generic maps.
func yamlDocs(t *testing.T, path string) []map[string]any {
	t.Helper()
	dec := yaml.NewDecoder(strings.NewReader(readFile(t, path)))
	var docs []map[string]any
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
	return docs
}

// get walks a path of map keys and list indexes through decoded YAML/JSON.
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func str(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

func TestDockerfile(t *testing.T) {
	df := readFile(t, "Dockerfile")
	for _, want := range []string{
		"FROM golang:1.26-bookworm AS build",
		"CGO_ENABLED=1",
		"FROM gcr.io/distroless/base-debian12:nonroot", // glibc and libcrypto.so.3
		"DKIMD_RSA_BACKEND=openssl",
		"go build",
		"./cmd/dkimd",
		"EXPOSE",
		"5353/udp",
		"5353/tcp",
		"9090/tcp",
		"8080/tcp",
		`ENTRYPOINT ["/usr/local/bin/dkimd", "serve"]`,
	} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	if n := strings.Count("\n"+df, "\nFROM "); n < 2 {
		t.Errorf("Dockerfile has %d stages, want a build stage and a runtime stage", n)
	}
	var user string
	sc := bufio.NewScanner(strings.NewReader(df))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "USER" {
			user = f[1]
		}
	}
	if user == "" || user == "root" || user == "0" || strings.HasPrefix(user, "0:") || strings.HasPrefix(user, "root:") {
		t.Errorf("final USER = %q, want a non-root user", user)
	}
	checkEnvNames(t, "Dockerfile", df)
}

func TestCompose(t *testing.T) {
	docs := yamlDocs(t, "docker-compose.yml")
	if len(docs) != 1 {
		t.Fatalf("docker-compose.yml has %d documents", len(docs))
	}
	c := docs[0]
	checkEnvNames(t, "docker-compose.yml", readFile(t, "docker-compose.yml"))
	services, _ := c["services"].(map[string]any)
	if !strings.HasPrefix(str(get(services, "postgres", "image")), "postgres:") {
		t.Errorf("no postgres service")
	}
	if get(services, "postgres", "healthcheck") == nil {
		t.Errorf("postgres has no healthcheck for dkimd to wait on")
	}
	var replicas []string
	for name := range services {
		if strings.HasPrefix(name, "dkimd") {
			replicas = append(replicas, name)
		}
	}
	sort.Strings(replicas)
	if len(replicas) != 2 {
		t.Fatalf("dkimd replicas = %v, want two", replicas)
	}
	secretsOf := func(name string) string { return fmt.Sprint(get(services, name, "secrets")) }
	envOf := func(name string) map[string]any {
		m, _ := get(services, name, "environment").(map[string]any)
		return m
	}
	for _, r := range replicas {
		env := envOf(r)
		for k, v := range env {
			if str(v) == "" {
				t.Errorf("%s: %s is empty, which dkimd reads as unset (write off to disable a listener)", r, k)
			}
		}
		if !strings.HasPrefix(str(env["DKIMD_DATABASE_URL"]), "postgres://") {
			t.Errorf("%s: DKIMD_DATABASE_URL = %v, want Postgres", r, env["DKIMD_DATABASE_URL"])
		}
		for _, k := range []string{"DKIMD_MASTER_KEY_FILE", "DKIMD_OPERATOR_TOKEN_FILE"} {
			if !strings.HasPrefix(str(env[k]), "/run/secrets/") {
				t.Errorf("%s: %s = %v, want a compose secret", r, k, env[k])
			}
		}
		if str(env["DKIMD_OPS_ADDR"]) != ":9090" {
			t.Errorf("%s: DKIMD_OPS_ADDR = %v, want :9090 for Prometheus", r, env["DKIMD_OPS_ADDR"])
		}
		ports := fmt.Sprint(get(services, r, "ports"))
		if !strings.Contains(ports, ":5353/udp") || !strings.Contains(ports, ":5353/tcp") {
			t.Errorf("%s: ports %s lack DNS over UDP and TCP", r, ports)
		}
		if get(services, r, "depends_on", "postgres") == nil {
			t.Errorf("%s does not wait for postgres", r)
		}
	}
	if secretsOf(replicas[0]) != secretsOf(replicas[1]) || !strings.Contains(secretsOf(replicas[0]), "dkimd_kek") || !strings.Contains(secretsOf(replicas[0]), "dkimd_operator_token") {
		t.Errorf("replicas do not share the KEK and operator token: %s / %s", secretsOf(replicas[0]), secretsOf(replicas[1]))
	}
	a, b := envOf(replicas[0]), envOf(replicas[1])
	for _, k := range []string{"DKIMD_DATABASE_URL", "DKIMD_MASTER_KEY_FILE", "DKIMD_ZONE"} {
		if a[k] != b[k] {
			t.Errorf("replicas differ in %s", k)
		}
	}
	for _, s := range []string{"dkimd_kek", "dkimd_operator_token"} {
		if get(c, "secrets", s, "file") == nil {
			t.Errorf("secret %s is not defined", s)
		}
	}
	vols := fmt.Sprint(get(services, "prometheus", "volumes"))
	if !strings.Contains(vols, "prometheus/prometheus.yml") || !strings.Contains(vols, "prometheus/alerts.yml") {
		t.Errorf("prometheus volumes %s lack the config and alert rules", vols)
	}

	// Prometheus scrapes both replicas on their ops port.
	prom := yamlDocs(t, filepath.Join("prometheus", "prometheus.yml"))[0]
	targets := fmt.Sprint(get(prom, "scrape_configs", 0, "static_configs", 0, "targets"))
	for _, r := range replicas {
		if !strings.Contains(targets, r+":9090") {
			t.Errorf("prometheus targets %s lack %s:9090", targets, r)
		}
	}
	if !strings.Contains(fmt.Sprint(prom["rule_files"]), "alerts.yml") {
		t.Errorf("prometheus.yml does not load alerts.yml")
	}
}

type k8sObjects map[string][]map[string]any // by kind

func loadKubernetes(t *testing.T) k8sObjects {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("kubernetes", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	objs := k8sObjects{}
	var kustomized []string
	for _, f := range files {
		checkEnvNames(t, f, readFile(t, f))
		for _, d := range yamlDocs(t, f) {
			kind := str(d["kind"])
			if kind == "" || d["apiVersion"] == nil {
				t.Errorf("%s: document without apiVersion and kind", f)
			}
			if kind == "Kustomization" {
				for _, r := range d["resources"].([]any) {
					kustomized = append(kustomized, str(r))
				}
				continue
			}
			objs[kind] = append(objs[kind], d)
			if kind != "Namespace" && str(get(d, "metadata", "namespace")) != "dkimd" {
				t.Errorf("%s: %s %v is not in namespace dkimd", f, kind, get(d, "metadata", "name"))
			}
		}
	}
	for _, f := range files {
		if base := filepath.Base(f); base != "kustomization.yaml" && !slices.Contains(kustomized, base) {
			t.Errorf("kustomization.yaml does not list %s", base)
		}
	}
	return objs
}

func TestKubernetes(t *testing.T) {
	objs := loadKubernetes(t)
	for _, kind := range []string{"Deployment", "Service", "Secret", "PodDisruptionBudget", "ConfigMap"} {
		if len(objs[kind]) == 0 {
			t.Fatalf("no %s", kind)
		}
	}
	dep := objs["Deployment"][0]
	pod := get(dep, "spec", "template", "spec")
	podLabels, _ := get(dep, "spec", "template", "metadata", "labels").(map[string]any)
	if v, _ := get(pod, "securityContext", "runAsNonRoot").(bool); !v {
		t.Errorf("pod does not set runAsNonRoot")
	}
	if uid, _ := get(pod, "securityContext", "runAsUser").(int); uid == 0 {
		t.Errorf("pod runAsUser = 0")
	}
	if r, _ := get(dep, "spec", "replicas").(int); r < 2 {
		t.Errorf("replicas = %d, want at least 2", r)
	}
	ctr := get(pod, "containers", 0)
	if v, _ := get(ctr, "securityContext", "allowPrivilegeEscalation").(bool); v || get(ctr, "securityContext", "allowPrivilegeEscalation") == nil {
		t.Errorf("container does not set allowPrivilegeEscalation: false")
	}
	// Named container ports, by name -> "port/proto".
	ports := map[string]string{}
	for _, p := range get(ctr, "ports").([]any) {
		proto := str(get(p, "protocol"))
		if proto == "" {
			proto = "TCP"
		}
		ports[str(get(p, "name"))] = fmt.Sprintf("%v/%s", get(p, "containerPort"), proto)
	}
	cm := objs["ConfigMap"][0]
	for k, v := range get(cm, "data").(map[string]any) {
		if str(v) == "" {
			t.Errorf("ConfigMap: %s is empty, which dkimd reads as unset (write off to disable a listener)", k)
		}
	}
	opsPort := strings.TrimPrefix(str(get(cm, "data", "DKIMD_OPS_ADDR")), ":")
	dnsPort := strings.TrimPrefix(str(get(cm, "data", "DKIMD_DNS_ADDR")), ":")
	for _, probe := range []struct{ name, path string }{{"readinessProbe", "/readyz"}, {"livenessProbe", "/healthz"}} {
		p := get(ctr, probe.name, "httpGet")
		if str(get(p, "path")) != probe.path {
			t.Errorf("%s path = %v, want %s", probe.name, get(p, "path"), probe.path)
		}
		port := str(get(p, "port"))
		if named, ok := ports[port]; ok {
			port = strings.TrimSuffix(named, "/TCP")
		}
		if port != opsPort {
			t.Errorf("%s port = %v (%s), want the ops port %s", probe.name, get(p, "port"), port, opsPort)
		}
	}
	if ports["dns-udp"] != dnsPort+"/UDP" || ports["dns-tcp"] != dnsPort+"/TCP" {
		t.Errorf("container DNS ports = %v, want %s over UDP and TCP", ports, dnsPort)
	}
	if !strings.Contains(fmt.Sprint(get(ctr, "envFrom")), "dkimd") {
		t.Errorf("container does not take the ConfigMap as environment")
	}

	// Service: DNS 53 over UDP and TCP onto the DNS container ports, and the API.
	var svcPorts []string
	for _, svc := range objs["Service"] {
		if !subset(get(svc, "spec", "selector"), podLabels) {
			t.Errorf("service %v does not select the pods", get(svc, "metadata", "name"))
		}
		for _, p := range get(svc, "spec", "ports").([]any) {
			target := str(get(p, "targetPort"))
			if named, ok := ports[target]; ok {
				target = named
			} else {
				t.Errorf("service port %v targets %q, not a named container port", get(p, "name"), target)
			}
			svcPorts = append(svcPorts, fmt.Sprintf("%v/%s->%s", get(p, "port"), get(p, "protocol"), target))
		}
	}
	for _, want := range []string{"53/UDP->" + dnsPort + "/UDP", "53/TCP->" + dnsPort + "/TCP", "8080/TCP->8080/TCP"} {
		if !slices.Contains(svcPorts, want) {
			t.Errorf("services %v lack %s", svcPorts, want)
		}
	}

	// Secret: the KEK and operator token, which the pod reads from files.
	sec := objs["Secret"][0]
	for _, k := range []string{"kek", "operator-token"} {
		if get(sec, "stringData", k) == nil && get(sec, "data", k) == nil {
			t.Errorf("secret lacks %s", k)
		}
	}
	if !strings.Contains(fmt.Sprint(get(pod, "volumes")), str(get(sec, "metadata", "name"))) {
		t.Errorf("pod does not mount the secret")
	}
	for _, k := range []string{"DKIMD_MASTER_KEY_FILE", "DKIMD_OPERATOR_TOKEN_FILE"} {
		if get(cm, "data", k) == nil {
			t.Errorf("ConfigMap does not point %s at the mounted secret", k)
		}
	}

	// kustomize renders what `kubectl apply -k` would send, offline.
	if kubectl, err := exec.LookPath("kubectl"); err == nil {
		if out, err := exec.Command(kubectl, "kustomize", "kubernetes").CombinedOutput(); err != nil {
			t.Errorf("kubectl kustomize: %v\n%s", err, out)
		}
	}

	pdb := objs["PodDisruptionBudget"][0]
	if !subset(get(pdb, "spec", "selector", "matchLabels"), podLabels) {
		t.Errorf("PodDisruptionBudget does not select the pods")
	}
	if get(pdb, "spec", "minAvailable") == nil && get(pdb, "spec", "maxUnavailable") == nil {
		t.Errorf("PodDisruptionBudget sets neither minAvailable nor maxUnavailable")
	}
}

func subset(sel any, labels map[string]any) bool {
	m, ok := sel.(map[string]any)
	if !ok || len(m) == 0 {
		return false
	}
	for k, v := range m {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func TestSystemdUnit(t *testing.T) {
	unit := readFile(t, filepath.Join("systemd", "dkimd.service"))
	checkEnvNames(t, "dkimd.service", unit)
	set := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(unit))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		set[line] = true
	}
	for _, want := range []string{
		"ExecStart=/usr/local/bin/dkimd serve",
		"DynamicUser=yes",
		"ProtectSystem=strict",
		"ProtectHome=yes",
		"PrivateTmp=yes",
		"NoNewPrivileges=yes",
		"StateDirectory=dkimd",
		"CapabilityBoundingSet=",
		"RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
		"SystemCallFilter=@system-service",
		"Environment=DKIMD_DATA_DIR=/var/lib/dkimd",
	} {
		if !set[want] {
			t.Errorf("dkimd.service lacks %q", want)
		}
	}
	// systemd-analyze verify: TestSystemdAnalyzeVerify.
}

func TestPromtoolCheckRules(t *testing.T) {
	path, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool is missing and CI=true: install the Debian package prometheus")
		}
		t.Skip("promtool not installed (Debian package prometheus)")
	}
	out, err := exec.Command(path, "check", "rules", filepath.Join("prometheus", "alerts.yml")).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
}

// metricRef finds metric names in PromQL: dkimd's own and the runtime
// collectors' it promises. Label names and functions do not match these
// prefixes.
var metricRef = regexp.MustCompile(`\b(?:dkimd|go|process)_[a-zA-Z0-9_]+`)

// referencedMetrics maps each metric name used in the alert rules and the
// dashboard to where it is used.
func referencedMetrics(t *testing.T) map[string]string {
	t.Helper()
	refs := map[string]string{}
	rules := yamlDocs(t, filepath.Join("prometheus", "alerts.yml"))[0]
	groups, _ := rules["groups"].([]any)
	for _, g := range groups {
		for _, r := range get(g, "rules").([]any) {
			for _, name := range metricRef.FindAllString(str(get(r, "expr")), -1) {
				refs[name] = "alert " + str(get(r, "alert"))
			}
		}
	}
	var dash map[string]any
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join("grafana", "dkimd-dashboard.json"))), &dash); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	panels, _ := dash["panels"].([]any)
	if len(panels) == 0 {
		t.Fatal("dashboard has no panels")
	}
	for _, p := range panels {
		targets, _ := get(p, "targets").([]any)
		for _, tg := range targets {
			for _, name := range metricRef.FindAllString(str(get(tg, "expr")), -1) {
				refs[name] = "panel " + str(get(p, "title"))
			}
		}
	}
	if len(refs) < 10 {
		t.Fatalf("only %d metric names found in rules and dashboard: %v", len(refs), refs)
	}
	return refs
}

// freePort finds a port free on 127.0.0.1 for both TCP and UDP.
func freePort(t *testing.T) string {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		ln.Close()
		if err == nil {
			pc.Close()
			return addr
		}
	}
	t.Fatal("no port free for both TCP and UDP")
	return ""
}

type runningDkimd struct {
	cmd    *exec.Cmd
	bin    string
	args   []string // the store and listener flags, for CLI subcommands too
	ops    string
	api    string
	sign   string
	stderr *bytes.Buffer
	done   chan error
}

// startDkimd builds dkimd and runs `dkimd serve` on loopback ports with an
// embedded store in a temporary directory.
func startDkimd(t *testing.T) *runningDkimd {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "dkimd")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "dkimd/cmd/dkimd")...)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	d := &runningDkimd{bin: bin, ops: freePort(t), api: freePort(t), sign: freePort(t), stderr: &bytes.Buffer{}, done: make(chan error, 1)}
	d.args = []string{
		"--data-dir", filepath.Join(dir, "data"),
		"--api-addr", d.api,
		"--dns-addr", freePort(t),
		"--sign-addr", d.sign,
		"--milter-addr", freePort(t),
		"--ops-addr", d.ops,
		"--resolver", freePort(t), // nothing answers there: no traffic leaves the host
		"--key-pool-size", "1", // one RSA key: the pool and its metrics exist, at little CPU
	}
	d.cmd = d.command("serve")
	d.cmd.Stderr = d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			_ = d.cmd.Process.Kill()
			<-d.done
		}
		if t.Failed() {
			t.Logf("dkimd log:\n%s", d.stderr.String())
		}
	})
	return d
}

// command runs a dkimd subcommand on the same store and settings; the
// test's own DKIMD_* environment does not leak into it.
func (d *runningDkimd) command(args ...string) *exec.Cmd {
	cmd := exec.Command(d.bin, append(args, d.args...)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DKIMD_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	return cmd
}

// traffic makes the labelled request counters exist: an API call, a
// refused and a signed message.
func (d *runningDkimd) traffic(t *testing.T) {
	t.Helper()
	var stderr bytes.Buffer
	create := d.command("brand", "create", "acme")
	create.Stderr = &stderr
	out, err := create.Output()
	if err != nil {
		t.Fatalf("dkimd brand create: %v\n%s", err, stderr.String())
	}
	secret := strings.TrimSpace(string(out))
	req, err := http.NewRequest(http.MethodGet, "http://"+d.api+"/cloudapi/v2/mail/dkim/acme", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("acme", secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET brand without domains = %d, want 404", resp.StatusCode)
	}
	add := d.command("maildomain", "add", "acme", "mail.example")
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("dkimd maildomain add: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		from string
		want int
	}{
		{"someone@unknown.example", http.StatusUnprocessableEntity},
		{"someone@mail.example", http.StatusOK}, // the brand's fallback key signs
	} {
		msg := "From: " + tc.from + "\r\nSubject: x\r\n\r\nbody\r\n"
		resp, err := http.Post("http://"+d.sign+"/v1/sign", "message/rfc822", strings.NewReader(msg))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("sign for %s = %d, want %d", tc.from, resp.StatusCode, tc.want)
		}
	}
}

// waitReady polls /readyz until it answers 200.
func (d *runningDkimd) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		select {
		case err := <-d.done:
			d.done <- err
			t.Fatalf("dkimd exited before it was ready: %v", err)
		default:
		}
		resp, err := http.Get("http://" + d.ops + "/readyz")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, b)
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("dkimd not ready after 30s: %s", last)
}

// exported scrapes /metrics and returns the metric family names, with the
// _bucket/_sum/_count series of histograms folded into their family.
func (d *runningDkimd) exported(t *testing.T) map[string]bool {
	t.Helper()
	resp, err := http.Get("http://" + d.ops + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics = %d", resp.StatusCode)
	}
	names := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Fields(line); len(f) >= 3 && f[0] == "#" && (f[1] == "HELP" || f[1] == "TYPE") {
			names[f[2]] = true
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name := line
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name = line[:i]
		}
		names[name] = true
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return names
}

// declaredInSource reports whether a metric name is declared as a string
// literal in dkimd's non-test Go code.
func declaredInSource(t *testing.T, name string) bool {
	t.Helper()
	found := false
	for _, dir := range []string{filepath.Join("..", "internal"), filepath.Join("..", "cmd")} {
		err := filepath.WalkDir(dir, func(path string, de os.DirEntry, err error) error {
			if err != nil || found || de.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			b, err := os.ReadFile(path)
			if err == nil && bytes.Contains(b, []byte(`"`+name+`"`)) {
				found = true
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return found
}

// TestRunningDkimd starts a real dkimd and holds the alert rules and the
// dashboard against the metrics it exports, then checks that SIGTERM stops
// it cleanly.
func TestRunningDkimd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs dkimd")
	}
	refs := referencedMetrics(t)
	d := startDkimd(t)
	d.waitReady(t)
	d.traffic(t)

	resp, err := http.Get("http://" + d.ops + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz = %d", resp.StatusCode)
	}

	exported := d.exported(t)
	for _, want := range []string{"go_goroutines", "process_resident_memory_bytes", "dkimd_build_info"} {
		if !exported[want] {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	var names []string
	for name := range refs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		// A histogram's series are its family name plus _bucket, _sum, _count.
		family := name
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok && (exported[base] || declaredInSource(t, base)) {
				family = base
			}
		}
		switch {
		case exported[family]:
		case strings.HasPrefix(family, "dkimd_") && declaredInSource(t, family):
			// Every subsystem pre-initialises its label values, so an idle
			// dkimd exports every family it declares.
			t.Errorf("%s (%s) is declared in the source but not exported by an idle dkimd: its owner must pre-initialise its labels", family, refs[name])
		default:
			t.Errorf("%s uses %s, which dkimd does not export", refs[name], name)
		}
	}

	// Graceful shutdown: SIGTERM ends the process with status 0, in time.
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	select {
	case err := <-d.done:
		d.done <- err // for the cleanup
		if err != nil {
			t.Errorf("dkimd after SIGTERM: %v", err)
		}
	case <-ctx.Done():
		t.Errorf("dkimd still running 20s after SIGTERM")
	}
	if !strings.Contains(d.stderr.String(), `"msg":"dkimd stopped"`) {
		t.Errorf("dkimd did not log its stop")
	}
}

// TestOperatorGuide holds docs/operator-guide.md to the flags and alerts
// that exist: every DKIMD_* variable documented, every alert explained.
func TestOperatorGuide(t *testing.T) {
	guide := readFile(t, filepath.Join("..", "docs", "operator-guide.md"))
	for env := range envTwins(t) {
		if !strings.Contains(guide, "`"+env+"`") {
			t.Errorf("operator guide does not document %s", env)
		}
	}
	checkEnvNames(t, "operator-guide.md", guide)
	rules := yamlDocs(t, filepath.Join("prometheus", "alerts.yml"))[0]
	groups, _ := rules["groups"].([]any)
	n := 0
	for _, g := range groups {
		for _, r := range get(g, "rules").([]any) {
			name := str(get(r, "alert"))
			n++
			if !strings.Contains(guide, "**"+name+"**") {
				t.Errorf("operator guide does not explain alert %s", name)
			}
		}
	}
	if n == 0 {
		t.Fatal("no alert rules found")
	}
}

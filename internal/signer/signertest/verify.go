package signertest

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"
)

//go:embed dkimpy_verify.py
var dkimpyScript []byte

// Python is Debian's interpreter, where python3-dkim is installed.
const Python = "/usr/bin/python3"

// RequireTool skips the test when an external tool is missing, or fails it
// when CI=true: CI must install it.
func RequireTool(t testing.TB, check func() error, what string) {
	t.Helper()
	if err := check(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required (CI=true): %v", what, err)
		}
		t.Skipf("%s is not available: %v", what, err)
	}
}

// RequireDkimpy skips or fails (CI=true) without python3-dkim and python3-dnspython.
func RequireDkimpy(t testing.TB) {
	t.Helper()
	RequireTool(t, func() error {
		out, err := exec.Command(Python, "-c", "import dkim, dns.query, nacl").CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}, "Debian python3-dkim, python3-dnspython and python3-nacl")
}

// DkimpyResult is what dkimpy made of one signature.
type DkimpyResult struct {
	D, S, A string
	OK      bool
	Error   string
}

// VerifyDkimpy verifies every signature of each message with dkimpy,
// resolving through d, in one interpreter run.
func VerifyDkimpy(t testing.TB, d *DNS, msgs map[string][]byte) map[string][]DkimpyResult {
	t.Helper()
	dir := t.TempDir()
	script := filepath.Join(dir, "verify.py")
	if err := os.WriteFile(script, dkimpyScript, 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{script, d.Addr, d.ZoneAddr, d.Zone}
	files := make(map[string]string)
	i := 0
	for name, m := range msgs {
		i++
		p := filepath.Join(dir, fmt.Sprintf("msg-%03d.eml", i))
		if err := os.WriteFile(p, m, 0o600); err != nil {
			t.Fatal(err)
		}
		files[p] = name
		args = append(args, p)
	}
	cmd := exec.Command(Python, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("dkimpy: %v\n%s", err, stderr.String())
	}
	res := make(map[string][]DkimpyResult)
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var line struct {
			File    string
			Results []struct {
				D, S, A, Error string
				OK             bool
			}
		}
		if err := dec.Decode(&line); err != nil {
			t.Fatalf("dkimpy output: %v\n%s", err, out)
		}
		var rs []DkimpyResult
		for _, r := range line.Results {
			rs = append(rs, DkimpyResult{D: r.D, S: r.S, A: r.A, OK: r.OK, Error: r.Error})
		}
		res[files[line.File]] = rs
	}
	if len(res) != len(msgs) {
		t.Fatalf("dkimpy reported on %d of %d messages\n%s", len(res), len(msgs), stderr.String())
	}
	return res
}

// VerifyGo verifies every signature of msg with go-msgauth resolving
// through d.
func VerifyGo(t testing.TB, d *DNS, msg []byte) []*dkim.Verification {
	t.Helper()
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(msg), &dkim.VerifyOptions{LookupTXT: d.LookupTXT})
	if err != nil {
		t.Fatalf("go-msgauth verify: %v", err)
	}
	return vs
}

// OpenDKIM is Debian's opendkim, run in its test mode (-t) to verify.
const OpenDKIM = "/usr/sbin/opendkim"

// RequireOpenDKIM skips or fails (CI=true) without Debian's opendkim.
func RequireOpenDKIM(t testing.TB) {
	t.Helper()
	RequireTool(t, func() error {
		_, err := exec.LookPath(OpenDKIM)
		return err
	}, "Debian opendkim")
}

// OpenDKIMResult is what OpenDKIM said of one signature.
type OpenDKIMResult struct {
	OK   bool
	Said string // its line about the message
}

// VerifyOpenDKIM has OpenDKIM verify every signature of each message,
// resolving through d (libunbound, given dkimd's zone server and the
// customers' server as stub zones), in one run. OpenDKIM's test mode reports
// on the first signature of a message only, so each signature at the top
// goes to it in a copy of the message without the others; a message that
// does not start with its signatures goes as it is, for one result.
func VerifyOpenDKIM(t testing.TB, d *DNS, msgs map[string][]byte) map[string][]OpenDKIMResult {
	t.Helper()
	dir := t.TempDir()
	unbound := filepath.Join(dir, "unbound.conf")
	stub := func(name, addr string) string {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("stub-zone:\n  name: %q\n  stub-addr: %s@%s\n", name, host, port)
	}
	// No DNSSEC validation, no query name minimisation (the customers'
	// server knows only the CNAMEs), and loopback servers allowed.
	conf := "server:\n  do-not-query-localhost: no\n  module-config: \"iterator\"\n  qname-minimisation: no\n  do-ip6: no\n" +
		stub(d.Zone, d.ZoneAddr) + stub("example", d.Addr)
	if err := os.WriteFile(unbound, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "opendkim.conf")
	if err := os.WriteFile(cfg, []byte("Mode v\nSyslog no\nResolverConfiguration "+unbound+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	type sig struct {
		name string
		i    int
	}
	byFile := make(map[string]sig)
	var files []string
	res := make(map[string][]OpenDKIMResult)
	for name, m := range msgs {
		sigs, rest := leadingSignatures(m)
		if len(sigs) < 2 {
			sigs, rest = []string{""}, m
		}
		res[name] = make([]OpenDKIMResult, len(sigs))
		for i, s := range sigs {
			p := filepath.Join(dir, fmt.Sprintf("msg-%03d.eml", len(files)))
			if err := os.WriteFile(p, append([]byte(s), rest...), 0o600); err != nil {
				t.Fatal(err)
			}
			files = append(files, p)
			byFile[p] = sig{name, i}
		}
	}
	if len(files) == 0 {
		return res
	}
	out, err := exec.Command(OpenDKIM, "-x", cfg, "-t", strings.Join(files, ",")).CombinedOutput()
	if err != nil {
		t.Fatalf("opendkim: %v\n%s", err, out)
	}
	seen := make(map[string]bool)
	for _, line := range strings.Split(string(out), "\n") {
		rest, ok := strings.CutPrefix(line, "opendkim: ")
		if !ok {
			continue
		}
		file, said, ok := strings.Cut(rest, ": ")
		s, known := byFile[file]
		if !ok || !known {
			continue
		}
		seen[file] = true
		res[s.name][s.i] = OpenDKIMResult{OK: strings.HasPrefix(said, "verification (") && strings.HasSuffix(said, ") succeeded"), Said: said}
	}
	for _, file := range files {
		if !seen[file] {
			t.Errorf("opendkim said nothing of %s (signature %d):\n%s", byFile[file].name, byFile[file].i, out)
		}
	}
	return res
}

// leadingSignatures splits the DKIM-Signature fields at the top of a
// message from the rest.
func leadingSignatures(m []byte) (sigs []string, rest []byte) {
	for bytes.HasPrefix(m, []byte("DKIM-Signature:")) {
		end := 0
		for {
			i := bytes.IndexByte(m[end:], '\n')
			if i < 0 {
				return sigs, m
			}
			end += i + 1
			if end >= len(m) || (m[end] != ' ' && m[end] != '\t') {
				break
			}
		}
		sigs, m = append(sigs, string(m[:end])), m[end:]
	}
	return sigs, m
}

package signertest

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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

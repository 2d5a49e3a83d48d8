package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDemo runs scripts/demo.sh, the brand guide from start to end against
// a real dkimd serve and this stand-in resolver, on free loopback ports and
// in a temporary dir (the guide's own ports may be in use on a test
// machine). The script fails at the first answer that differs from the
// guide.
func TestDemo(t *testing.T) {
	for _, tool := range []string{"dig", "curl", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is missing and CI=true (.ci/run installs bind9-dnsutils and curl)", tool)
			}
			t.Skipf("%s not installed", tool)
		}
	}
	if testing.Short() {
		t.Skip("builds and runs dkimd")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // mostly the two builds on a cold cache
	defer cancel()
	for _, b := range []struct{ out, pkg string }{{"dkimd", "./cmd/dkimd"}, {"standin", "./cmd/dkimd-standin-resolver"}} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(bin, b.out), b.pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", b.pkg, err, out)
		}
	}
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "scripts", "demo.sh"))
	cmd.Env = append(os.Environ(),
		"DKIMD="+filepath.Join(bin, "dkimd"), "STANDIN="+filepath.Join(bin, "standin"), "DEMO_DIR="+t.TempDir(),
		"DEMO_API_ADDR="+freeTCP(t), "DEMO_SIGN_ADDR="+freeTCP(t), "DEMO_OPS_ADDR="+freeTCP(t),
		"DEMO_DNS_ADDR="+freeUDPAndTCP(t), "DEMO_RESOLVER_ADDR="+freeUDPAndTCP(t))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "== demo done") {
		t.Fatalf("demo ended early:\n%s", out.String())
	}
}

func freeTCP(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// freeUDPAndTCP is a loopback port free for both, as a DNS server needs.
func freeUDPAndTCP(t *testing.T) string {
	t.Helper()
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := pc.LocalAddr().String()
		ln, err := net.Listen("tcp", addr)
		pc.Close()
		if err == nil {
			ln.Close()
			return addr
		}
	}
	t.Fatal("no port free for UDP and TCP")
	return ""
}

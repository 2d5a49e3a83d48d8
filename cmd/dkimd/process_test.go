package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"dkimd/internal/logtest"
)

// TestMain lets a test run this package's main in a child process: the
// test binary re-executed with DKIMD_TEST_MAIN=1 is dkimd.
func TestMain(m *testing.M) {
	if os.Getenv("DKIMD_TEST_MAIN") == "1" {
		os.Args = append([]string{"dkimd"}, os.Args[1:]...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// dkimdProcess starts dkimd with args as a child process, with extra
// environment variables env.
func dkimdProcess(t *testing.T, env []string, args ...string) (*exec.Cmd, *logtest.Buffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append([]string{"DKIMD_TEST_MAIN=1", "PATH=" + os.Getenv("PATH")}, env...)
	// Read while the child writes: a buffer safe for both.
	stderr := &logtest.Buffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, stderr
}

// TestSecondServeProcessIsRefused: two dkimd processes, the first creating
// the data dir; the second is refused naming the first one's PID. The first
// runs with GOGC=1, so that its collector runs all the time: a lock whose
// file nothing references any more would be finalised and dropped.
func TestSecondServeProcessIsRefused(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data") // created by the first serve
	args := func() []string {
		return []string{"serve", "--data-dir", dataDir, "--api-addr", freeAddr(t), "--dns-addr", "", "--sign-addr", "",
			"--milter-addr", "", "--ops-addr", "", "--key-pool-size", "0", "--resolver", "127.0.0.1:9"}
	}
	first, firstErr := dkimdProcess(t, []string{"GOGC=1"}, args()...)
	exited := make(chan error, 1)
	go func() { exited <- first.Wait() }()
	t.Cleanup(func() {
		_ = first.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = first.Process.Kill()
			t.Error("the first serve did not stop on SIGTERM")
		}
	})
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(firstErr.String(), `"msg":"dkimd serving"`); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the first serve never started:\n%s", firstErr.String())
		}
	}
	for round := range 2 {
		second, secondErr := dkimdProcess(t, nil, args()...)
		done := make(chan error, 1)
		go func() { done <- second.Wait() }()
		var err error
		select {
		case err = <-done:
		case <-time.After(20 * time.Second):
			_ = second.Process.Kill()
			<-done
			t.Fatalf("round %d: a second serve runs beside the first:\n%s", round, secondErr.String())
		}
		code := -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		if code != 1 || !strings.Contains(secondErr.String(), "PID "+strconv.Itoa(first.Process.Pid)) {
			t.Fatalf("round %d: second serve: %v (exit %d), stderr %q; want exit 1 naming PID %d", round, err, code, secondErr.String(), first.Process.Pid)
		}
		time.Sleep(time.Second) // the first serve's loops make garbage; its collector runs meanwhile
	}
}

package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"dkimd/internal/logtest"
	"dkimd/internal/rsasign"
)

// TestRSABackendChoice starts serve with each --rsa-backend: the backend
// in use is logged and exported, and openssl where this binary cannot load
// libcrypto (CGO_ENABLED=0, or no libcrypto.so.3) refuses to start, naming
// the flag.
func TestRSABackendChoice(t *testing.T) {
	libErr := rsasign.Available()
	for _, tc := range []struct{ flag, want string }{
		{"go", "go"},
		{"auto", map[bool]string{true: "openssl", false: "go"}[libErr == nil]},
		{"openssl", map[bool]string{true: "openssl", false: ""}[libErr == nil]},
	} {
		t.Run(tc.flag, func(t *testing.T) {
			dataDir := t.TempDir()
			prepareDataDir(t, dataDir)
			ops := freeAddr(t)
			args := []string{"serve", "--data-dir", dataDir, "--api-addr", freeAddr(t), "--dns-addr", "",
				"--sign-addr", freeAddr(t), "--milter-addr", "", "--ops-addr", ops, "--key-pool-size", "0",
				"--rsa-backend", tc.flag}
			logs := &logtest.Buffer{}
			if tc.want == "" {
				ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
				defer cancel()
				err := run(ctx, args, noEnv, io.Discard, logs)
				if err == nil || !strings.Contains(err.Error(), "--rsa-backend openssl") {
					t.Fatalf("serve --rsa-backend openssl without libcrypto: %v, want a start-up error naming the flag", err)
				}
				return
			}
			serve := runServe(t, args, noEnv, logs)
			var page []byte
			for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				if ended, err := serve.ended(); ended {
					t.Fatalf("serve ended: %v\n%s", err, logs.String())
				}
				if time.Now().After(deadline) {
					t.Fatalf("no dkimd_sign_rsa_backend_info in /metrics within 20 s; log:\n%s", logs.String())
				}
				resp, err := http.Get("http://" + ops + "/metrics")
				if err != nil {
					continue
				}
				resp.Body.Close()
				// The ops listener starts before the signer registers its
				// metrics: wait for the backend's.
				if resp.StatusCode == http.StatusOK {
					_, page = httpCall(t, "GET", "http://"+ops+"/metrics", "", "", "", nil)
					if strings.Contains(string(page), "dkimd_sign_rsa_backend_info{") {
						break
					}
				}
			}
			if got := metricValue(t, page, `dkimd_sign_rsa_backend_info{backend="`+tc.want+`"}`); got != 1 {
				t.Errorf("dkimd_sign_rsa_backend_info{backend=%q} = %d, want 1", tc.want, got)
			}
			if strings.Count(string(page), "dkimd_sign_rsa_backend_info{") != 1 {
				t.Errorf("more than one backend exported:\n%s", page)
			}
			if !strings.Contains(logs.String(), `"msg":"rsa backend","backend":"`+tc.want+`"`) {
				t.Errorf("no log line for the %s backend:\n%s", tc.want, logs.String())
			}
		})
	}
}

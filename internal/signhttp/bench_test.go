package signhttp_test

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"dkimd/internal/signer"
	"dkimd/internal/signer/signertest"
	"dkimd/internal/signhttp"
)

// BenchmarkSign measures POST /v1/sign with a 2 KB message: "handler" calls
// the handler directly (the endpoint's own cost over the signer's, compare
// with signer's BenchmarkSign), "loopback" goes through a real HTTP server
// and client in this process (their CPU counts too: compare with bench/sign,
// which measures the server process alone). Compare cpu-ns/op.
func BenchmarkSign(b *testing.B) {
	f := signertest.New(b)
	reg := prometheus.NewRegistry()
	s, err := signer.New(signer.Options{Store: f.Store, Box: f.Svc.Box, Zone: signertest.Zone, Registerer: reg})
	if err != nil {
		b.Fatal(err)
	}
	h, err := signhttp.New(signhttp.Options{Signer: s, Token: token, MaxBytes: 1 << 20, Registerer: reg,
		Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	msg := signertest.Message(signertest.AlignedRSA, 2<<10)

	b.Run("handler", func(b *testing.B) {
		b.ReportAllocs()
		cpu := signertest.StartCPU()
		for b.Loop() {
			req := httptest.NewRequest(http.MethodPost, "/v1/sign", bytes.NewReader(msg))
			req.Header.Set("Authorization", "Bearer "+token)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != http.StatusOK {
				b.Fatalf("status %d: %s", w.Code, w.Body)
			}
		}
		cpu.Report(b)
	})

	b.Run("loopback", func(b *testing.B) {
		srv := httptest.NewServer(h)
		defer srv.Close()
		b.ReportAllocs()
		cpu := signertest.StartCPU()
		b.RunParallel(func(pb *testing.PB) {
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
			defer client.CloseIdleConnections()
			for pb.Next() {
				req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/sign", bytes.NewReader(msg))
				if err != nil {
					b.Fatal(err)
				}
				req.Header.Set("Authorization", "Bearer "+token)
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK {
					b.Fatalf("status %d, %v", resp.StatusCode, err)
				}
			}
		})
		cpu.Report(b)
	})
}

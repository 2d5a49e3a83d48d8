package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"dkimd/internal/console"
	"dkimd/internal/httpapi"
)

// apiShutdownTimeout bounds how long in-flight API requests may finish after
// SIGTERM: a PUT with a 4096-bit key takes a few seconds, and this stays
// inside Kubernetes' default 30 s grace period.
const apiShutdownTimeout = 20 * time.Second

// setAPIRotator makes the brand API's rotate and dns calls use r; until it
// is called they answer 503.
func (a *app) setAPIRotator(r httpapi.Rotator) {
	if a.api != nil {
		a.api.SetRotator(r)
	}
}

// startAPI starts the brand and admin API listener; it stops when ctx ends,
// letting in-flight requests finish within apiShutdownTimeout.
func (a *app) startAPI(ctx context.Context, g *errgroup.Group) error {
	if a.cfg.APIAddr == "" {
		a.log.Info("api listener disabled")
		return nil
	}
	token := a.operatorToken
	metrics, err := httpapi.NewMetrics(a.registry)
	if err != nil {
		return err
	}
	// The session key comes from the KEK, which every replica already
	// shares (docs/decisions.md, "Console sessions").
	sessionKey, err := a.box.DeriveKey(console.KeyPurpose)
	if err != nil {
		return err
	}
	brandConsole, err := console.New(console.Options{Brands: a.store, Key: sessionKey, Now: a.now})
	if err != nil {
		return err
	}
	api := httpapi.New(httpapi.Options{
		Store: a.store, Service: a.svc, OperatorToken: token, Log: a.log, Metrics: metrics, Now: a.now,
		Console: brandConsole,
	})
	a.api = api

	srv := &http.Server{
		Handler:           api,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		// Generous: a PUT generating 4096-bit RSA keys is slow.
		WriteTimeout:   60 * time.Second,
		IdleTimeout:    120 * time.Second,
		MaxHeaderBytes: 32 << 10,
		ErrorLog:       slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
	var certs *certReloader
	if a.cfg.TLSCertFile != "" {
		if certs, err = newCertReloader(a.cfg.TLSCertFile, a.cfg.TLSKeyFile); err != nil {
			return fmt.Errorf("--tls-cert-file: %w", err)
		}
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: certs.get}
	}
	// Listen here rather than in the goroutine so a taken port fails start-up
	// with a message naming the flag.
	ln, err := net.Listen("tcp", a.cfg.APIAddr)
	if err != nil {
		return fmt.Errorf("--api-addr: %w", err)
	}
	ln = a.retryAccept("api", ln)
	if certs != nil {
		ln = tls.NewListener(ln, srv.TLSConfig)
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		g.Go(func() error {
			defer signal.Stop(hup)
			for {
				select {
				case <-ctx.Done():
					return nil
				case <-hup:
					if err := certs.reload(); err != nil {
						a.log.Error("TLS certificate not reloaded; keeping the old one", slog.String("err", err.Error()))
						continue
					}
					a.log.Info("TLS certificate reloaded", slog.String("cert_file", a.cfg.TLSCertFile))
				}
			}
		})
	} else {
		a.log.Warn("API listener serves plain HTTP: put it behind a TLS-terminating proxy, Basic auth sends brand secrets in clear")
	}
	a.log.Info("api listening", slog.String("addr", ln.Addr().String()), slog.Bool("tls", certs != nil))
	serveHTTP(ctx, g, "api", srv, ln, apiShutdownTimeout)
	return nil
}

// loadOperatorToken reads the admin API token, or generates one (mode 0600)
// on first start. The log names the file, never the token.
func loadOperatorToken(path string, log *slog.Logger) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		raw := make([]byte, 32)
		if _, err := rand.Read(raw); err != nil {
			return "", err
		}
		token := base64.RawURLEncoding.EncodeToString(raw)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return "", err
		}
		// O_EXCL: two replicas starting at once on one data dir must not
		// overwrite each other's token.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return loadOperatorToken(path, log)
		}
		if err != nil {
			return "", err
		}
		if _, err := f.WriteString(token + "\n"); err != nil {
			f.Close()
			return "", err
		}
		if err := f.Close(); err != nil {
			return "", err
		}
		log.Warn("generated an operator token for the admin API", slog.String("path", path))
		return token, nil
	}
	if err != nil {
		return "", err
	}
	token := strings.TrimSpace(string(b))
	if token == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return token, nil
}

// certReloader serves the API's certificate and swaps it on SIGHUP, so that
// a renewed certificate needs no restart.
type certReloader struct {
	certFile, keyFile string
	cert              atomic.Pointer[tls.Certificate]
}

func newCertReloader(certFile, keyFile string) (*certReloader, error) {
	c := &certReloader{certFile: certFile, keyFile: keyFile}
	return c, c.reload()
}

func (c *certReloader) reload() error {
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return err
	}
	c.cert.Store(&cert)
	return nil
}

func (c *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.cert.Load(), nil
}

package main

import (
	"crypto/tls"
	"errors"
	"io"
	"net"

	"dkimd/internal/config"
	"dkimd/internal/zone"
)

// preflight checks what serve's listeners will need before serve writes
// anything: every listen address can be bound (all at once, so two flags
// naming one port are caught too), the TLS pair loads and the TSIG key
// parses. The listeners bind again when they start; what this catches is
// the common case, a port another process already holds.
func preflight(cfg config.Config) error {
	var held []io.Closer
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	tcp := func(flagName, addr string) error {
		if addr == "" {
			return nil
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fail(err, "--%s: cannot listen on %s: %v", flagName, addr, unwrapOp(err))
		}
		held = append(held, ln)
		return nil
	}
	for _, l := range []struct{ flag, addr string }{
		{"api-addr", cfg.APIAddr}, {"sign-addr", cfg.SignAddr}, {"milter-addr", cfg.MilterAddr}, {"ops-addr", cfg.OpsAddr}, {"dns-addr", cfg.DNSAddr},
	} {
		if err := tcp(l.flag, l.addr); err != nil {
			return err
		}
	}
	if cfg.DNSAddr != "" {
		pc, err := net.ListenPacket("udp", cfg.DNSAddr)
		if err != nil {
			return fail(err, "--dns-addr: cannot listen on %s (UDP): %v", cfg.DNSAddr, unwrapOp(err))
		}
		held = append(held, pc)
	}
	if cfg.TLSCertFile != "" {
		if _, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile); err != nil {
			return fail(err, "--tls-cert-file, --tls-key-file: %v", err)
		}
	}
	if cfg.TSIGKeyFile != "" {
		if _, err := zone.LoadTSIGKey(cfg.TSIGKeyFile); err != nil {
			return fail(err, "--tsig-key-file: %v", err)
		}
	}
	return nil
}

// unwrapOp drops the "listen tcp 127.0.0.1:8080: " prefix that the message
// around it already says.
func unwrapOp(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

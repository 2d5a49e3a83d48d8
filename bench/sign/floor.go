package main

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	gomilter "github.com/d--j/go-milter"

	"dkimd/bench/internal/benchproc"
	"dkimd/internal/milter"
	"dkimd/internal/rsasign"
	"dkimd/internal/signer"
)

// The transport floor: servers that do nothing per message but read it,
// make one bare RSA-2048 signature (with the benchmark's RSA backend, as
// dkimd serve signs) and answer with a fixed field of a DKIM-Signature's
// size. An HTTP endpoint on net/http, which dkimd's sign endpoint is built
// on; dkimd's own milter server (internal/milter) with a handler in place
// of the signer; and a milter on d--j/go-milter, the server dkimd used
// before its own. Run in a process of its own, like dkimd serve, each
// shows what the server and the kernel's TCP cost around a signature
// before any DKIM work: the best a path built on it can reach. The
// benchmark starts it by running itself with -floor-server.

var floorServer = flag.String("floor-server", "", "internal: run the transport floor on http-addr,go-milter-addr,milter-addr,key-file")

// floorField is about the size of dkimd's RSA DKIM-Signature value.
var floorField = "v=1; a=rsa-sha256; c=relaxed/relaxed; d=rsa.bench.example; s=selector1; t=1700000000;\r\n\th=from:from:to:cc:subject:date:message-id:reply-to:mime-version:content-type:in-reply-to:references:list-unsubscribe:list-unsubscribe-post;\r\n\tbh=" + strings.Repeat("A", 44) + ";\r\n\tb=" + strings.Repeat("B", 344)

// runFloorServer serves until the process is killed.
func runFloorServer(spec string) {
	parts := strings.Split(spec, ",")
	if len(parts) != 4 {
		log.Fatalf("-floor-server %q: want http-addr,go-milter-addr,milter-addr,key-file", spec)
	}
	pemBytes, err := os.ReadFile(parts[3])
	must(err)
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		log.Fatal("floor: no PEM key")
	}
	key, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	must(err)
	backend, _, err := rsasign.Select(*rsaBackend)
	must(err)
	signer, err := backend.Signer(key)
	must(err)
	sign := func(msg string) error {
		digest := sha256.Sum256([]byte(msg))
		_, err := signer.Sign(nil, digest[:], crypto.SHA256)
		return err
	}

	httpLn, err := net.Listen("tcp", parts[0])
	must(err)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/sign", func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := sign(r.URL.Path); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "DKIM-Signature: "+floorField+"\r\n")
	})
	go func() { log.Fatal(http.Serve(httpLn, mux)) }()

	ownLn, err := net.Listen("tcp", parts[2])
	must(err)
	own, err := milter.New(milter.Options{Handler: floorHandler{sign: sign}})
	must(err)
	go func() { log.Fatal(own.Serve(ownLn)) }()

	milterLn, err := net.Listen("tcp", parts[1])
	must(err)
	// Negotiated as dkimd negotiates: what it asks, of what the MTA offers.
	srv := gomilter.NewServer(
		gomilter.WithMilter(func() gomilter.Milter { return &floorMilter{sign: sign} }),
		gomilter.WithNegotiationCallback(func(mtaVersion, _ uint32, _, _ gomilter.OptAction, mtaProtocol, _ gomilter.OptProtocol, _ gomilter.DataSize) (uint32, gomilter.OptAction, gomilter.OptProtocol, gomilter.DataSize, error) {
			return min(mtaVersion, gomilter.MaxServerProtocolVersion), gomilter.OptAddHeader, gomilter.OptProtocol(milter.Protocol) & mtaProtocol, gomilter.DataSize64K, nil
		}),
	)
	if err := srv.Serve(milterLn); err != nil && !errors.Is(err, gomilter.ErrServerClosed) {
		log.Fatal(err)
	}
}

type floorMilter struct {
	gomilter.NoOpMilter
	sign func(string) error
}

func (m *floorMilter) EndOfMessage(mod gomilter.Modifier) (*gomilter.Response, error) {
	if err := m.sign("milter"); err != nil {
		return nil, err
	}
	if err := mod.InsertHeader(0, "DKIM-Signature", strings.ReplaceAll(floorField, "\r\n", "\n")); err != nil {
		return nil, err
	}
	return gomilter.RespAccept, nil
}

// floorHandler is the floor behind dkimd's own milter server: the server
// reads and checks every packet and hands the header block and the body
// over, as to the signer; each message gets one bare signature.
type floorHandler struct{ sign func(string) error }

func (h floorHandler) Begin(context.Context, []byte) (milter.Message, error) {
	return floorMessage(h), nil
}

type floorMessage struct{ sign func(string) error }

func (floorMessage) Write(p []byte) (int, error) { return len(p), nil }

func (m floorMessage) Close() (signer.Result, error) {
	if err := m.sign("milter"); err != nil {
		return signer.Result{}, err
	}
	return signer.Result{Signatures: []signer.Signature{{Algorithm: "rsa", Field: "DKIM-Signature: " + floorField + "\r\n"}}}, nil
}

func (floorMessage) Abort() {}

// startFloor runs this program with -floor-server as the server process of
// the floor rows.
func startFloor(dir string, e *env) server {
	keyFile := filepath.Join(dir, "floor.key")
	must(os.WriteFile(keyFile, e.rsaPEM, 0o600))
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort())
	goMilterAddr := fmt.Sprintf("127.0.0.1:%d", freePort())
	milterAddr := fmt.Sprintf("127.0.0.1:%d", freePort())
	self, err := os.Executable()
	must(err)
	cmd := exec.Command(self, "-floor-server", httpAddr+","+goMilterAddr+","+milterAddr+","+keyFile, "-rsa-backend", *rsaBackend)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = diesWithBench()
	if *serverEnv != "" {
		cmd.Env = append(os.Environ(), strings.Fields(*serverEnv)...)
	}
	must(cmd.Start())
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}
	if err := benchproc.WaitListening(httpAddr, goMilterAddr, milterAddr); err != nil {
		stop()
		log.Fatalf("floor server: %v", err)
	}
	return server{pid: cmd.Process.Pid, httpURL: "http://" + httpAddr + "/v1/sign", milterAddr: milterAddr, goMilterAddr: goMilterAddr, stop: stop}
}

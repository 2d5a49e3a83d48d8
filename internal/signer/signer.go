// Package signer DKIM-signs outbound mail with the keys in the keystore. It
// picks the key by the RFC 5322 From domain (the domain's own active key when
// the domain is active, else its brand's fallback key, else no signature and
// a reason), signs with go-msgauth, and keeps parsed private keys in memory.
//
// It owns the signing policy (header list, canonicalization, key choice) and
// nothing about transports: the HTTP endpoint (signhttp) and the milter use
// it. It never logs or returns key material.
package signer

import (
	"bufio"
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/prometheus/client_golang/prometheus"

	"dkimd/internal/keystore"
	"dkimd/internal/sealbox"
)

// signedHeaders is the h= list of every signature, in this order. From
// appears twice: the second entry signs the absence of a second From, so a
// From added in transit breaks the signature (oversigning, RFC 6376 §8.15).
// The others are what a reader sees or acts on (RFC 6376 §5.4.1); the
// List-Unsubscribe pair because large mailbox providers only honour RFC 8058
// one-click unsubscribe when both are signed. Received, Return-Path and the
// like are left out: they change in transit by design.
var signedHeaders = []string{
	"From", "From",
	"To", "Cc",
	"Subject", "Date", "Message-ID",
	"Reply-To",
	"MIME-Version", "Content-Type",
	"In-Reply-To", "References",
	"List-Unsubscribe", "List-Unsubscribe-Post",
}

// Modes: whose key signed.
const (
	ModeAligned  = "aligned"  // the From domain's own key, d=<domain>
	ModeFallback = "fallback" // the brand's key, d=<brand>.<zone>
)

// Store is what the signer reads from the keystore.
type Store interface {
	Domain(ctx context.Context, name string) (keystore.Domain, error)
	Keys(ctx context.Context, kind keystore.OwnerKind, owner string) ([]keystore.Key, error)
	MaildomainBrands(ctx context.Context, domain string) ([]string, error)
	// EachMaildomain streams every (maildomain, brand) pair, for the outage
	// directory (Warm).
	EachMaildomain(ctx context.Context, fn func(domain, brand string) error) error
}

// Options configure a Signer.
type Options struct {
	Store Store
	Box   *sealbox.Box
	Zone  string // the service's zone: fallback signatures use d=<brand>.<zone>
	Now   func() time.Time
	Log   *slog.Logger
	// Registerer receives the dkimd_sign_* metrics; nil registers none.
	Registerer prometheus.Registerer
	// Listener names the transport ("http", "milter", "library") in a
	// constant metric label, so that each can own a Signer.
	Listener string
	// MaxAge is how long a cached key choice is used without a change
	// notice (Invalidate); it bounds how late a replica that shares a
	// Postgres with the one that rotated notices. Default 30s.
	MaxAge time.Duration
	// DirectoryRefresh is how often KeepWarm rereads every maildomain for
	// the outage directory. Default 5m.
	DirectoryRefresh time.Duration
	// MaxHeaderBytes bounds the header block. Default 1 MiB.
	MaxHeaderBytes int
}

// Signer signs messages. It is safe for concurrent use.
type Signer struct {
	opts    Options
	cache   *cache
	metrics *metrics

	// The outage directory (directory.go): dir is read without a lock by
	// every message the store cannot resolve; dirMu serialises loads.
	dir   atomic.Pointer[directory]
	dirMu sync.Mutex
}

// New returns a Signer.
func New(opts Options) (*Signer, error) {
	if opts.Store == nil || opts.Box == nil || opts.Zone == "" {
		return nil, errors.New("signer: store, box and zone are required")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.MaxAge <= 0 {
		opts.MaxAge = 30 * time.Second
	}
	if opts.DirectoryRefresh <= 0 {
		opts.DirectoryRefresh = 5 * time.Minute
	}
	if opts.MaxHeaderBytes <= 0 {
		opts.MaxHeaderBytes = 1 << 20
	}
	if opts.Listener == "" {
		opts.Listener = "library"
	}
	m, err := newMetrics(opts.Registerer, opts.Listener)
	if err != nil {
		return nil, err
	}
	s := &Signer{opts: opts, metrics: m}
	s.cache = newCache(s)
	return s, nil
}

// Invalidate drops every cached key choice, so that the next message sees
// the store's current keys. Pass it to keystore.SQL.Watch.
func (s *Signer) Invalidate() { s.cache.invalidate() }

// Signature is one DKIM-Signature header field.
type Signature struct {
	Algorithm string // "rsa" or "ed25519"
	Selector  string
	// Field is "DKIM-Signature: …" with CRLF line ends, folded, ending in
	// CRLF: ready to prepend to the message.
	Field string
}

// Result says how a message was signed.
type Result struct {
	Domain     string // d=
	Mode       string // ModeAligned or ModeFallback
	FromDomain string
	// Signatures holds the RSA signature first, then the Ed25519 one when
	// the signing domain has Ed25519 keys.
	Signatures []Signature
}

// Header is every signature field, concatenated, to prepend to the message.
func (r Result) Header() string {
	var b strings.Builder
	for _, s := range r.Signatures {
		b.WriteString(s.Field)
	}
	return b.String()
}

// Selectors lists the selectors used, in signature order.
func (r Result) Selectors() []string {
	sels := make([]string, len(r.Signatures))
	for i, s := range r.Signatures {
		sels[i] = s.Selector
	}
	return sels
}

// Sign reads a whole message from r and signs it. It holds only the header
// block in memory: the body streams through the hash. A message that cannot
// be signed gets a *Refusal.
func (s *Signer) Sign(ctx context.Context, r io.Reader) (Result, error) {
	rd := getReader(r)
	defer rd.release()
	header, eoh, err := readHeader(rd.br, rd.header[:0], s.opts.MaxHeaderBytes)
	if err != nil {
		if _, ok := AsRefusal(err); !ok {
			err = fmt.Errorf("%w: %w", ErrRead, err)
		}
		s.metrics.observeError(err)
		return Result{}, err
	}
	rd.header = header
	m, err := s.Begin(ctx, header)
	if err != nil {
		return Result{}, err
	}
	if !eoh {
		// All header: EOF came before the empty line, so there is no body.
		return m.Close()
	}
	// WriteTo hands the body over in the reader's own buffer: no copy
	// buffer per message.
	if _, err := rd.br.WriteTo(m); err != nil {
		m.Abort()
		if rd.src.err != nil {
			err = fmt.Errorf("%w: %w", ErrRead, err)
		} else {
			err = fmt.Errorf("signer: %w", err)
		}
		s.metrics.observeError(err)
		return Result{}, err
	}
	return m.Close()
}

// reader is what Sign reads a message with, kept in a pool: at hundreds of
// messages a second, a fresh 32 KB buffer per message is most of the
// garbage the signer makes, and collecting it costs CPU the signatures need.
type reader struct {
	src    errReader
	br     *bufio.Reader // reads src
	header []byte        // the header block, reused
}

var readerPool = sync.Pool{New: func() any {
	rd := new(reader)
	rd.br = bufio.NewReaderSize(&rd.src, 32<<10)
	return rd
}}

func getReader(r io.Reader) *reader {
	rd := readerPool.Get().(*reader)
	rd.src = errReader{r: r}
	rd.br.Reset(&rd.src)
	return rd
}

// release returns rd to the pool, holding on to neither the source nor an
// unusually large header block.
func (rd *reader) release() {
	rd.src = errReader{}
	rd.br.Reset(&rd.src)
	if cap(rd.header) > 64<<10 {
		rd.header = nil
	}
	readerPool.Put(rd)
}

// errReader remembers a read error, so that a failed copy can be told
// apart: the source's fault (ErrRead) or the signer's.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

// Message is one message being signed: Begin has read its header, Write
// takes the body, Close returns the signatures.
type Message struct {
	s       *Signer
	start   time.Time
	res     Result
	signers []*dkim.Signer
	// w turns bare LF into CRLF and writes to batch, which hands the bytes
	// to the signers in batches (see batchSize).
	w     *crlfWriter
	batch *bufio.Writer
	// closed is atomic because Abort may come from a cleanup (the milter
	// aborts the message of a connection that vanished) on another goroutine.
	closed atomic.Bool
}

// batchSize is how many bytes are gathered before they go to the signers.
// go-msgauth reads its input through an io.Pipe from a goroutine of its own,
// 4 KB at a time, so every Write is a hand-off between goroutines: without
// batching the header block and the body of a small message go over in
// separate hand-offs, and bare-LF input in several per line. Larger batches
// would gain nothing, since the reads stay 4 KB.
const batchSize = 4096

var batchPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, batchSize) }}

// Begin picks the keys for a message from its header block (the header
// fields, with or without the empty line that ends them; bare LF or CRLF) and
// starts the signatures. The caller writes the body and calls Close, or
// Abort when it gives up.
func (s *Signer) Begin(ctx context.Context, header []byte) (*Message, error) {
	start := s.opts.Now()
	from, err := fromFields(header)
	if err != nil {
		s.metrics.observeError(err)
		return nil, err
	}
	domain, err := fromDomain(from)
	if err != nil {
		s.metrics.observeError(err)
		return nil, err
	}
	p, err := s.cache.plan(ctx, domain)
	if err == nil && p.refusal != nil {
		err = p.refusal
	}
	if err != nil {
		s.metrics.observeError(err)
		return nil, err
	}
	m := &Message{s: s, start: start, res: Result{Domain: p.domain, Mode: p.mode, FromDomain: p.fromDomain,
		Signatures: make([]Signature, 0, len(p.keys))}, signers: make([]*dkim.Signer, 0, len(p.keys))}
	writers := make([]io.Writer, 0, len(p.keys))
	for _, k := range p.keys {
		ds, err := dkim.NewSigner(signOptions(p.domain, k))
		if err != nil {
			m.Abort()
			s.metrics.observeError(err)
			return nil, fmt.Errorf("signer: %w", err)
		}
		m.signers = append(m.signers, ds)
		m.res.Signatures = append(m.res.Signatures, Signature{Algorithm: k.algorithm, Selector: k.selector})
		writers = append(writers, ds)
	}
	m.batch = batchPool.Get().(*bufio.Writer)
	if len(writers) == 1 {
		m.batch.Reset(writers[0])
	} else {
		m.batch.Reset(io.MultiWriter(writers...))
	}
	m.w = newCRLFWriter(m.batch)
	if _, err := m.w.Write(header); err != nil {
		m.Abort()
		s.metrics.observeError(err)
		return nil, fmt.Errorf("signer: %w", err)
	}
	if !endsWithEmptyLine(header) {
		// A header block without its empty line: supply it, so that the
		// signer sees where the body starts (header-only messages, or a
		// milter that hands over fields one by one).
		sep := "\r\n"
		if len(header) > 0 && header[len(header)-1] != '\n' {
			sep = "\r\n\r\n"
		}
		if _, err := io.WriteString(m.w, sep); err != nil {
			m.Abort()
			s.metrics.observeError(err)
			return nil, fmt.Errorf("signer: %w", err)
		}
	}
	return m, nil
}

// signOptions is the one place that builds dkim.SignOptions.
func signOptions(domain string, k *signingKey) *dkim.SignOptions {
	return SignOptions(domain, k.selector, k.signer)
}

// SignOptions is the go-msgauth configuration of every signature the signer
// makes. It is exported for bench/sign, which times go-msgauth alone with it.
func SignOptions(domain, selector string, key crypto.Signer) *dkim.SignOptions {
	return &dkim.SignOptions{
		Domain:   domain,
		Selector: selector,
		Signer:   key,
		Hash:     crypto.SHA256,
		// Relaxed/relaxed survives the re-folding and whitespace changes
		// of relays; go-msgauth's zero value would be simple/simple.
		HeaderCanonicalization: dkim.CanonicalizationRelaxed,
		BodyCanonicalization:   dkim.CanonicalizationRelaxed,
		HeaderKeys:             signedHeaders,
		// No l=: a body length limit lets anyone append content. No x=:
		// keys rotate, and a signature must verify for as long as its key
		// is published. t= is set by go-msgauth from the system clock.
	}
}

// Write feeds body bytes, bare LF or CRLF.
func (m *Message) Write(p []byte) (int, error) {
	if m.closed.Load() {
		return 0, errClosed
	}
	return m.w.Write(p)
}

var errClosed = errors.New("signer: message already closed")

// Close finishes the signatures.
func (m *Message) Close() (Result, error) {
	if m.closed.Swap(true) {
		return Result{}, errClosed
	}
	errs := []error{m.batch.Flush()}
	// The batch buffer goes back to the pool only here: Abort may run
	// while another goroutine is in Write.
	m.batch.Reset(nil)
	batchPool.Put(m.batch)
	m.batch, m.w = nil, nil
	for i, ds := range m.signers {
		if err := ds.Close(); err != nil {
			errs = append(errs, err)
			continue
		}
		m.res.Signatures[i].Field = ds.Signature()
	}
	if err := errors.Join(errs...); err != nil {
		m.s.metrics.observeError(err)
		return Result{}, fmt.Errorf("signer: sign: %w", err)
	}
	m.s.metrics.observeSigned(m.res, m.s.opts.Now().Sub(m.start))
	return m.res, nil
}

// Abort releases a message that will not be finished: each signature
// holds a goroutine until its message is closed or aborted.
func (m *Message) Abort() {
	if m.closed.Swap(true) {
		return
	}
	for _, ds := range m.signers {
		_ = ds.Close() // the error is about an incomplete message, which is the point
	}
}

func endsWithEmptyLine(h []byte) bool {
	s := string(h)
	return s == "\r\n" || s == "\n" || strings.HasSuffix(s, "\n\r\n") || strings.HasSuffix(s, "\n\n")
}

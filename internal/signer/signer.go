// Package signer DKIM-signs outbound mail with the keys in the keystore. It
// picks the key by the RFC 5322 From domain (the domain's own active key when
// the domain is active, else its brand's fallback key, else no signature and
// a reason), signs with dkimd's own core (package dkim), and keeps parsed
// private keys in memory.
//
// It owns the key choice and what a message must be to be signed (one From,
// a header block that parses); how a signature is made, the signed header
// fields included, is package dkim's. It knows nothing about transports: one
// Signer serves the HTTP endpoint (signhttp), the milter and library callers
// of a process alike. It never logs or returns key material.
package signer

import (
	"bufio"
	"context"
	"crypto"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"dkimd/internal/dkim"
	"dkimd/internal/keystore"
	"dkimd/internal/sealbox"
)

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
	// SignExpiry, when positive, gives every signature an x= that much
	// after its t= (--sign-expiry); zero writes no x=.
	SignExpiry time.Duration
	// MaxAge is how long a cached key choice is used without a change
	// notice (Invalidate); it bounds how late a replica that shares a
	// Postgres with the one that rotated notices. Default 30s.
	MaxAge time.Duration
	// DirectoryRefresh is how often KeepWarm rereads every maildomain for
	// the outage directory. Default 5m.
	DirectoryRefresh time.Duration
	// MaxHeaderBytes bounds the header block. Default 1 MiB.
	MaxHeaderBytes int
	// RSA turns each RSA private key, once when it is parsed, into what
	// signs with it (rsasign.Backend.Signer: crypto/rsa or libcrypto). A
	// result that is an io.Closer is closed when rotation replaces the key.
	// Default: the key itself, precomputed (crypto/rsa).
	RSA func(*rsa.PrivateKey) (crypto.Signer, error)
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
	if opts.RSA == nil {
		opts.RSA = func(k *rsa.PrivateKey) (crypto.Signer, error) {
			k.Precompute()
			return k, nil
		}
	}
	m, err := newMetrics(opts.Registerer)
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
	s     *Signer
	start time.Time
	res   Result
	keys  []*signingKey
	st    *messageState
	// closed is atomic because Abort may come from a cleanup (the milter
	// aborts the message of a connection that vanished) on another
	// goroutine, while a Write may still be running: so Abort only marks
	// the message, and the state goes back to its pool in Close alone.
	closed atomic.Bool
}

// messageState is what a message needs from Begin to Close, kept in a pool
// so that a message costs little more garbage than its signature fields.
type messageState struct {
	header dkim.Header
	from   []string
	list   []string // h=
	data   []byte   // the canonical header fields h= names
	body   *dkim.BodyHash
	sum    []byte
}

var statePool = sync.Pool{New: func() any { return &messageState{body: dkim.NewBodyHash()} }}

// Begin picks the keys for a message from its header block (the header
// fields, with or without the empty line that ends them; bare LF or CRLF)
// and starts the signatures. The caller writes the body and calls Close, or
// Abort when it gives up. Begin does not keep header.
func (s *Signer) Begin(ctx context.Context, header []byte) (*Message, error) {
	start := s.opts.Now()
	st := statePool.Get().(*messageState)
	m, err := s.begin(ctx, header, st)
	st.header.Reset()
	if err != nil {
		statePool.Put(st)
		s.metrics.observeError(err)
		return nil, err
	}
	m.start = start
	return m, nil
}

func (s *Signer) begin(ctx context.Context, header []byte, st *messageState) (*Message, error) {
	if err := st.header.Parse(header); err != nil {
		var se *dkim.SyntaxError
		if errors.As(err, &se) {
			return nil, refuse(CodeHeaderUnparseable, "%s", se.Reason)
		}
		return nil, fmt.Errorf("signer: %w", err)
	}
	st.from = st.header.Values(st.from[:0], "From")
	domain, err := s.cache.fromDomain(st.from)
	if err != nil {
		return nil, err
	}
	p, err := s.cache.plan(ctx, domain)
	if err == nil && p.refusal != nil {
		err = p.refusal
	}
	if err != nil {
		return nil, err
	}
	st.list, st.data = st.header.Select(st.list[:0], st.data[:0])
	st.body.Reset()
	m := &Message{s: s, st: st, keys: p.keys, res: Result{Domain: p.domain, Mode: p.mode, FromDomain: p.fromDomain,
		Signatures: make([]Signature, len(p.keys))}}
	for i, k := range p.keys {
		m.res.Signatures[i] = Signature{Algorithm: k.algorithm, Selector: k.selector}
	}
	return m, nil
}

// Write feeds body bytes, bare LF or CRLF. The body is hashed as it comes,
// once for every signature of the message.
func (m *Message) Write(p []byte) (int, error) {
	if m.closed.Load() {
		return 0, errClosed
	}
	return m.st.body.Write(p)
}

var errClosed = errors.New("signer: message already closed")

// Close finishes the signatures. t= is the injected clock's time now.
func (m *Message) Close() (Result, error) {
	if m.closed.Swap(true) {
		return Result{}, errClosed
	}
	st := m.st
	m.st = nil
	defer statePool.Put(st)
	st.sum = st.body.Sum(st.sum[:0])
	if line := st.body.BareCR(); line > 0 {
		// Verifiers hash such a body three different ways (see
		// dkim.BodyHash): a signature would fail at some of them.
		err := refuse(CodeBodyBareCR, "body line %d contains a CR that is not followed by LF (RFC 5322 §2.3 forbids it, and verifiers canonicalize it differently)", line)
		m.s.metrics.observeError(err)
		return Result{}, err
	}
	now := m.s.opts.Now()
	for i, k := range m.keys {
		field, err := dkim.Sign(st.data, st.sum, &dkim.Signature{
			Domain: m.res.Domain, Selector: k.selector, Key: k.signer,
			Time: now, Expiry: m.s.opts.SignExpiry, Headers: st.list,
		})
		if err != nil {
			m.s.metrics.observeError(err)
			return Result{}, fmt.Errorf("signer: sign: %w", err)
		}
		m.res.Signatures[i].Field = field
	}
	m.s.metrics.observeSigned(m.res, now.Sub(m.start))
	return m.res, nil
}

// Abort gives up on a message. It holds nothing that needs releasing: a
// message that is neither closed nor aborted costs only its memory.
func (m *Message) Abort() { m.closed.Store(true) }

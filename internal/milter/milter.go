// Package milter is dkimd's milter listener (the Sendmail/Postfix filter
// protocol, via github.com/emersion/go-milter): the MTA hands over each
// outgoing message, the milter signs it with package signer and inserts the
// DKIM-Signature field(s) at the top of the header. A message that cannot be
// signed passes unchanged, with a log line: signing must never stop mail.
//
// It owns the protocol only; key choice and signing are package signer's.
package milter

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/textproto"
	"runtime"
	"strings"
	"sync"
	"time"

	gomilter "github.com/emersion/go-milter"
	"github.com/prometheus/client_golang/prometheus"

	"dkimd/internal/signer"
)

// Options configure the milter.
type Options struct {
	Signer *signer.Signer
	Log    *slog.Logger
	// Registerer receives dkimd_sign_milter_* metrics; nil registers none.
	Registerer prometheus.Registerer
	// Timeout bounds the key lookup of one message. Default 10s.
	Timeout time.Duration
}

// Outcomes of a message, the label of dkimd_sign_milter_messages_total.
const (
	outcomeSigned   = "signed"
	outcomeRefused  = "unsigned" // not signable: passed on unchanged
	outcomeError    = "error"    // a failure of dkimd: passed on unchanged
	outcomeAborted  = "aborted"  // the MTA gave up on the message
	maxHeaderFields = 10_000
)

// Server is a milter listener.
type Server struct {
	opts     Options
	srv      *gomilter.Server
	messages *prometheus.CounterVec

	// go-milter's own Close races with its Serve (unlocked fields), so
	// this server closes the listener itself.
	mu     sync.Mutex
	ln     net.Listener
	closed bool
}

// New returns a milter server.
func New(opts Options) (*Server, error) {
	if opts.Signer == nil {
		return nil, errors.New("milter: a signer is required")
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	s := &Server{
		opts: opts,
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dkimd_sign_milter_messages_total",
			Help: "Messages the milter saw, by outcome (signed, unsigned, error, aborted).",
		}, []string{"outcome"}),
	}
	for _, o := range []string{outcomeSigned, outcomeRefused, outcomeError, outcomeAborted} {
		s.messages.WithLabelValues(o) // zeros from the start, for dashboards
	}
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(s.messages); err != nil {
			return nil, err
		}
	}
	s.srv = &gomilter.Server{
		NewMilter: func() gomilter.Milter { return &session{s: s} },
		// Inserting a header is all the milter does.
		Actions: gomilter.OptAddHeader,
		// Only the header and the body matter; skipping the rest saves
		// round trips per message.
		Protocol: gomilter.OptNoConnect | gomilter.OptNoHelo | gomilter.OptNoMailFrom | gomilter.OptNoRcptTo,
	}
	return s, nil
}

// Serve accepts MTA connections on ln until Close.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.ln = ln
	s.mu.Unlock()
	err := s.srv.Serve(bufferedListener{ln})
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed || errors.Is(err, gomilter.ErrServerClosed) {
		return nil
	}
	return err
}

// Close stops accepting connections; messages in progress finish.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.ln == nil {
		return nil
	}
	if err := s.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

// session is one MTA connection, which may carry several messages.
type session struct {
	s      *Server
	header []byte
	fields int
	msg    *signer.Message
	// skip is set once the message is known to pass unsigned.
	skip    bool
	queueID string // Postfix's queue id ({i} macro), for the log
}

func (m *session) reset() {
	if m.msg != nil {
		m.msg.Abort()
	}
	*m = session{s: m.s, header: m.header[:0]}
}

func (m *session) Connect(string, string, uint16, net.IP, *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}

func (m *session) Helo(string, *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}

func (m *session) MailFrom(string, *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}

func (m *session) RcptTo(string, *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}

// Header rebuilds the field as it appears in the message. The MTA sends the
// value without the space after the colon and with LF inside folded values;
// relaxed canonicalization makes both immaterial, and the signer turns LF
// into CRLF.
func (m *session) Header(name, value string, mod *gomilter.Modifier) (gomilter.Response, error) {
	m.fields++
	if m.fields > maxHeaderFields {
		// The signer would refuse it anyway; stop collecting.
		m.skip = true
		return gomilter.RespContinue, nil
	}
	m.header = append(m.header, name...)
	m.header = append(m.header, ':')
	if value != "" && value[0] != ' ' && value[0] != '\t' {
		m.header = append(m.header, ' ')
	}
	m.header = append(m.header, value...)
	m.header = append(m.header, '\r', '\n')
	return gomilter.RespContinue, nil
}

// Headers is the end of the header: pick the keys now, and let a message
// that will not be signed go without sending its body.
func (m *session) Headers(_ textproto.MIMEHeader, mod *gomilter.Modifier) (gomilter.Response, error) {
	m.queueID = mod.Macros["i"]
	if m.skip {
		m.pass(outcomeRefused, slog.String("reason", "too many header fields"))
		m.reset() // accepted: the MTA sends no body, the next message starts afresh
		return gomilter.RespAccept, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.s.opts.Timeout)
	defer cancel()
	msg, err := m.s.opts.Signer.Begin(ctx, m.header)
	if err != nil {
		m.refused(err)
		m.reset()
		return gomilter.RespAccept, nil
	}
	m.msg = msg
	// An MTA that drops the connection mid-message (a milter timeout, a
	// crash) sends no abort, and go-milter tells no one: once the session
	// is garbage, abort its message so the signature goroutines end.
	runtime.AddCleanup(m, (*signer.Message).Abort, msg)
	return gomilter.RespContinue, nil
}

func (m *session) BodyChunk(chunk []byte, _ *gomilter.Modifier) (gomilter.Response, error) {
	if m.msg == nil {
		return gomilter.RespAccept, nil
	}
	if _, err := m.msg.Write(chunk); err != nil {
		m.refused(err)
		m.reset()
		return gomilter.RespAccept, nil
	}
	return gomilter.RespContinue, nil
}

// Body is the end of the message: finish the signatures and insert them
// at the top, RSA first.
func (m *session) Body(mod *gomilter.Modifier) (gomilter.Response, error) {
	defer m.reset()
	if m.msg == nil {
		return gomilter.RespAccept, nil
	}
	msg := m.msg
	m.msg = nil
	res, err := msg.Close()
	if err != nil {
		m.refused(err)
		return gomilter.RespAccept, nil
	}
	sigs := res.Signatures
	for i := len(sigs) - 1; i >= 0; i-- {
		name, value := splitField(sigs[i].Field)
		if err := mod.InsertHeader(0, name, value); err != nil {
			// The connection to the MTA failed: nothing more can be said.
			m.pass(outcomeError, slog.String("error", err.Error()))
			return nil, err
		}
	}
	m.s.messages.WithLabelValues(outcomeSigned).Inc()
	m.s.opts.Log.Debug("message signed", slog.String("queue_id", m.queueID), slog.String("domain", res.Domain),
		slog.String("mode", res.Mode), slog.String("selector", strings.Join(res.Selectors(), ",")))
	return gomilter.RespAccept, nil
}

func (m *session) Abort(*gomilter.Modifier) error {
	if m.msg != nil || len(m.header) > 0 {
		m.s.messages.WithLabelValues(outcomeAborted).Inc()
	}
	m.reset()
	return nil
}

// refused logs why a message passes unsigned.
func (m *session) refused(err error) {
	if r, ok := signer.AsRefusal(err); ok {
		m.pass(outcomeRefused, slog.String("code", r.Code), slog.String("reason", r.Reason))
		return
	}
	m.pass(outcomeError, slog.String("error", err.Error()))
}

func (m *session) pass(outcome string, attrs ...slog.Attr) {
	m.s.messages.WithLabelValues(outcome).Inc()
	level := slog.LevelInfo
	if outcome == outcomeError {
		level = slog.LevelError
	}
	attrs = append(attrs, slog.String("queue_id", m.queueID))
	m.s.opts.Log.LogAttrs(context.Background(), level, "message passed unsigned", attrs...)
	if m.msg != nil {
		m.msg.Abort()
		m.msg = nil
	}
}

// splitField turns "DKIM-Signature: v=1; …\r\n …\r\n" into the name and the
// value the milter protocol carries (no space after the colon, no final
// line end; go-milter turns the inner CRLF into the LF the MTA expects).
func splitField(field string) (name, value string) {
	name, value, _ = strings.Cut(field, ":")
	return name, strings.TrimSuffix(strings.TrimPrefix(value, " "), "\r\n")
}

// bufferedListener gives each connection a read buffer. go-milter reads a
// packet's length and its body with separate reads; buffered, the MTA's
// packets that arrived together (macros, header field, end of header) cost
// one system call instead of two each.
type bufferedListener struct{ net.Listener }

func (l bufferedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &bufferedConn{Conn: c, r: bufio.NewReaderSize(c, 16<<10)}, nil
}

type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

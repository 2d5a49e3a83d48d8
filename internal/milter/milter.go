// Package milter is dkimd's milter listener (the Sendmail/Postfix filter
// protocol, via github.com/d--j/go-milter): the MTA hands over each
// outgoing message, the milter signs it with package signer and inserts the
// DKIM-Signature field(s) at the top of the header. A message that cannot be
// signed passes unchanged, with a log line: signing must never stop mail.
//
// It speaks protocol version 6 and asks the MTA not to wait for a reply to
// any event but the end of the message, so that header fields and body
// chunks stream in without a round trip each. An MTA that offers less (an
// old one, or Postfix with milter_protocol = 2) still works, waiting for a
// reply per event.
//
// It owns the protocol only; key choice and signing are package signer's.
package milter

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	gomilter "github.com/d--j/go-milter"
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

// Protocol is what the milter asks of the MTA, of which it gets what the
// MTA offers. bench/sign's transport floor asks the same.
const Protocol = skipStages | gomilter.OptNoReplies

// skipStages are the events the milter does not need: only the header and
// the body matter.
const skipStages = gomilter.OptNoConnect | gomilter.OptNoHelo | gomilter.OptNoMailFrom | gomilter.OptNoRcptTo |
	gomilter.OptNoUnknown | gomilter.OptNoData

// Server is a milter listener.
type Server struct {
	opts     Options
	srv      *gomilter.Server
	messages *prometheus.CounterVec

	// Close stops accepting connections but lets the MTA finish the
	// messages in progress, which go-milter's Close (it drops every
	// connection) and Shutdown (it waits for the MTA to hang up, which
	// Postfix does only when its SMTP session ends) do not do; so this
	// server closes the listener itself.
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
	s.srv = gomilter.NewServer(
		gomilter.WithMilter(func() gomilter.Milter { return &session{s: s} }),
		gomilter.WithNegotiationCallback(s.negotiate),
	)
	return s, nil
}

// negotiate answers the MTA's offer. go-milter's own negotiation fails
// unless the MTA offers every protocol option asked for; an MTA that cannot
// spare the replies must still get its mail signed, so the milter takes the
// part of protocol that the MTA offers.
func (s *Server) negotiate(mtaVersion, _ uint32, mtaActions, _ gomilter.OptAction, mtaProtocol, _ gomilter.OptProtocol, _ gomilter.DataSize) (uint32, gomilter.OptAction, gomilter.OptProtocol, gomilter.DataSize, error) {
	var err error
	switch {
	case mtaVersion < 2:
		err = fmt.Errorf("milter: the MTA speaks milter protocol version %d, 2 or later is needed", mtaVersion)
	case mtaActions&gomilter.OptAddHeader == 0:
		err = errors.New("milter: the MTA does not let milters add header fields")
	}
	if err != nil {
		s.opts.Log.Error("milter negotiation failed", slog.String("error", err.Error()))
		return 0, 0, 0, 0, err
	}
	version := min(mtaVersion, gomilter.MaxServerProtocolVersion)
	// Inserting a header field is all the milter does. The packets stay
	// at the 64 KB every MTA accepts.
	return version, gomilter.OptAddHeader, Protocol & mtaProtocol, gomilter.DataSize64K, nil
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
	gomilter.NoOpMilter // the stages the milter asks the MTA to skip

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

// NewConnection logs what the MTA agreed to: a version below 6 or missing
// no-reply options mean a round trip per header field.
func (m *session) NewConnection(mod gomilter.Modifier) error {
	m.s.opts.Log.Debug("milter connection", slog.Uint64("version", uint64(mod.Version())),
		slog.String("protocol", mod.Protocol().String()))
	return nil
}

// Header rebuilds the field as it appears in the message. The MTA sends the
// value without the space after the colon (unless the milter asked for it
// with SMFIP_HDR_LEADSPC, which this one does not) and with LF inside folded
// values; relaxed canonicalization makes both immaterial, and the signer
// turns LF into CRLF. Without a reply expected (SMFIP_NR_HDR), the response
// is dropped.
func (m *session) Header(name, value string, _ gomilter.Modifier) (*gomilter.Response, error) {
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

// Headers is the end of the header: pick the keys now. A message that
// will not be signed is accepted here, which spares sending its body to an
// MTA that waits for this reply; one that does not (SMFIP_NR_EOH) sends the
// body anyway, and the milter ignores it.
func (m *session) Headers(mod gomilter.Modifier) (_ *gomilter.Response, err error) {
	defer m.recoverPanic(&err)
	m.queueID = mod.Get(gomilter.MacroQueueId)
	if m.skip {
		m.pass(outcomeRefused, slog.String("reason", "too many header fields"))
		m.reset() // the next message starts afresh
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
	return gomilter.RespContinue, nil
}

func (m *session) BodyChunk(chunk []byte, _ gomilter.Modifier) (_ *gomilter.Response, err error) {
	defer m.recoverPanic(&err)
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

// EndOfMessage finishes the signatures and inserts them at the top, RSA
// first.
func (m *session) EndOfMessage(mod gomilter.Modifier) (_ *gomilter.Response, err error) {
	defer m.reset()
	defer m.recoverPanic(&err) // first, while the queue id is known
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

func (m *session) Abort(gomilter.Modifier) error {
	if m.msg != nil || len(m.header) > 0 {
		m.s.messages.WithLabelValues(outcomeAborted).Inc()
	}
	m.reset()
	return nil
}

// Cleanup is the end of the connection. An MTA that drops it mid-message
// (a milter timeout, a crash) sends no abort: the message counts as
// aborted, and its signature goroutines end here.
func (m *session) Cleanup(mod gomilter.Modifier) {
	_ = m.Abort(mod)
}

// recoverPanic turns a panic in signing into an error log and a closed
// connection (the MTA applies its milter_default_action), not a crash of
// dkimd; go-milter does not recover.
func (m *session) recoverPanic(err *error) {
	v := recover()
	if v == nil {
		return
	}
	*err = fmt.Errorf("milter: panic: %v", v)
	m.pass(outcomeError, slog.String("error", (*err).Error()), slog.String("stack", string(debug.Stack())))
	m.reset()
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

// bufferedListener buffers each connection both ways. go-milter reads a
// packet's length and its body with separate reads; buffered, the MTA's
// packets that arrived together (macros, header fields, end of header, body
// chunks: with no replies awaited, a whole message) cost one system call
// instead of two each. It also writes a packet's length and its body with
// separate writes, and the end of message's reply is several packets (the
// inserted fields, then accept): held back until the reply is complete,
// they cost one system call and reach the MTA in one segment.
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
	w []byte // packets of a reply not sent yet
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Write sends what it has been given once it ends with a whole packet that
// is not a message modification (those are always followed by the final
// reply). go-milter sets the write deadline before each call, so the last
// one bounds the actual write.
func (c *bufferedConn) Write(p []byte) (int, error) {
	c.w = append(c.w, p...)
	if !replyComplete(c.w) {
		return len(p), nil
	}
	_, err := c.Conn.Write(c.w)
	c.w = c.w[:0]
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// replyComplete reports whether b is whole milter packets (4-byte length,
// code, data), the last of which ends a reply.
func replyComplete(b []byte) bool {
	last := byte(0)
	for len(b) > 0 {
		if len(b) < 5 {
			return false
		}
		n := int(binary.BigEndian.Uint32(b))
		if n < 1 || len(b)-4 < n {
			// A malformed length is sent as it is: holding it back
			// would stall the connection, not repair it.
			return n < 1
		}
		last = b[4]
		b = b[4+n:]
	}
	return !isModification(last)
}

// isModification reports whether code is a message modification (SMFIR_ADDRCPT,
// DELRCPT, REPLBODY, ADDHEADER, CHGHEADER, INSHEADER, QUARANTINE, CHGFROM,
// ADDRCPT_PAR), which is only sent before the end of message's final reply.
func isModification(code byte) bool {
	return strings.IndexByte("+-bhmiqe2", code) >= 0
}

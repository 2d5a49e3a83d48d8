// Package milter is dkimd's milter server: the Sendmail/Postfix filter
// protocol, version 6, spoken by dkimd itself. The MTA hands over each
// outgoing message, the milter signs it with package signer and inserts
// the DKIM-Signature field(s) at the top of the header (SMFIR_INSHEADER at
// index 0). A message that cannot be signed passes unsigned, or is
// tempfailed when Options.OnError says so (docs/operator-guide.md).
//
// The port is open to whatever connects, so every packet is checked before
// use (parsePacket, packetLength): a length of zero or over 1 MiB, a
// string without its NUL, a field cut short or an unknown command ends
// that one session with a log line and dkimd_milter_protocol_errors_total,
// never the process. A session idle for Options.IdleTimeout is closed, at
// most Options.MaxConns run at once, and one holds at most a 1 MiB header
// block: the body is hashed as it streams. docs/reliability.md ("Hostile
// input: milter") lists what was tried; docs/decisions.md says why this
// server replaced github.com/d--j/go-milter.
//
// It asks the MTA to skip every stage but the header and the body and to
// wait for no reply but the end of message's (Protocol), so that header
// fields and body chunks stream in without a round trip each. An MTA that
// offers less (an old one, or Postfix with milter_protocol = 2) still
// works, waiting for a reply per event.
//
// Layout: packet.go parses packets, reader.go frames them off the stream,
// session.go is the per-connection state machine (no socket: tests drive it
// directly), this file accepts connections and bounds them.
//
// It owns the protocol only; key choice and signing are package signer's.
package milter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"dkimd/internal/signer"
)

// Options configure the milter.
type Options struct {
	// Signer signs the messages.
	Signer *signer.Signer
	// Handler, when set, takes the messages instead of Signer: bench/sign's
	// transport floor serves one that makes a bare signature, to measure
	// this server around the signing alone.
	Handler Handler
	Log     *slog.Logger
	// Registerer receives the dkimd_sign_milter_* and dkimd_milter_*
	// metrics; nil registers none.
	Registerer prometheus.Registerer
	// Timeout bounds the key lookup of one message. Default 10s.
	Timeout time.Duration
	// IdleTimeout closes a session that sends no whole packet for this
	// long (--milter-timeout). Default 5m, Postfix's milter_content_timeout.
	IdleTimeout time.Duration
	// MaxConns is the most sessions at once (--milter-max-conns); a
	// connection beyond it is closed at once. Default 1000.
	MaxConns int
	// OnError is the answer to a message that is not signed
	// (--milter-on-error): "accept" (the default) passes it on unsigned,
	// "tempfail" has the MTA retry it later.
	OnError string
}

// Handler is what the sessions hand each message to, as package signer
// takes it: the header block at the end of the header, the body as it
// streams, then the fields to insert; a *signer.Refusal (signer.AsRefusal)
// from Begin or Close lets the message pass unsigned.
type Handler interface {
	Begin(ctx context.Context, header []byte) (Message, error)
}

// Message is one message of a Handler, as *signer.Message.
type Message interface {
	io.Writer
	Close() (signer.Result, error)
	Abort()
}

// signerHandler is the Handler of Options.Signer.
type signerHandler struct{ s *signer.Signer }

func (h signerHandler) Begin(ctx context.Context, header []byte) (Message, error) {
	m, err := h.s.Begin(ctx, header)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// Server is a milter listener.
type Server struct {
	opts     Options
	tempfail bool
	metrics  *metrics
	slots    chan struct{} // one per session running
	lastFull atomic.Int64  // when "too many sessions" was last logged, unix seconds

	// Close stops accepting connections but lets the MTA finish the
	// messages in progress: a session ends when its MTA hangs up (Postfix
	// does at the end of its SMTP session) or goes idle. Serve does not
	// wait for them.
	mu     sync.Mutex
	ln     net.Listener
	closed bool
}

// New returns a milter server.
func New(opts Options) (*Server, error) {
	switch {
	case opts.Handler != nil:
	case opts.Signer != nil:
		opts.Handler = signerHandler{opts.Signer}
	default:
		return nil, errors.New("milter: a signer is required")
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 5 * time.Minute
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = 1000
	}
	s := &Server{opts: opts, slots: make(chan struct{}, opts.MaxConns)}
	switch opts.OnError {
	case "", "accept":
	case "tempfail":
		s.tempfail = true
	default:
		return nil, fmt.Errorf("milter: on error %q: want accept or tempfail", opts.OnError)
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	return s, nil
}

// Serve accepts MTA connections on ln until Close, and returns the first
// accept error that is not the listener's closing. ln is to retry the
// temporary ones (EMFILE and its kind) itself, as package accept's
// listener does (serve wraps it with ops.RetryAccept), so that running out
// of descriptors pauses the milter instead of ending serve.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return l.Close()
	}
	s.ln = l
	s.mu.Unlock()
	for {
		c, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("milter: accept: %w", err)
		}
		select {
		case s.slots <- struct{}{}:
		default:
			s.refuseConn(c)
			continue
		}
		go func() {
			defer func() { <-s.slots }()
			s.serveConn(c)
		}()
	}
}

// refuseConn closes a connection over MaxConns at once: the MTA applies
// its milter_default_action to that message, the sessions running keep
// their share. The log line comes at most once a second.
func (s *Server) refuseConn(c net.Conn) {
	c.Close()
	s.metrics.refused.Inc()
	now := time.Now().Unix()
	if last := s.lastFull.Load(); now > last && s.lastFull.CompareAndSwap(last, now) {
		s.opts.Log.Warn("milter sessions at their cap, connection closed",
			slog.Int("max_conns", s.opts.MaxConns), slog.String("remote", c.RemoteAddr().String()))
	}
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

// serveConn runs one session: packets in, replies out, until the MTA quits
// or hangs up, the session idles out or breaks the protocol.
func (s *Server) serveConn(c net.Conn) {
	defer c.Close()
	s.metrics.sessions.Inc()
	defer s.metrics.sessions.Dec()
	m := &session{s: s}
	log := func() *slog.Logger { return s.opts.Log.With(slog.String("remote", c.RemoteAddr().String())) }
	defer func() {
		// The last fence: a panic (in signing, say) ends this session,
		// not dkimd. The MTA applies its milter_default_action.
		if v := recover(); v != nil {
			s.metrics.messages.WithLabelValues(outcomeError).Inc()
			log().Error("milter session panicked", slog.String("err", fmt.Sprint(v)),
				slog.String("queue_id", m.queueID), slog.String("stack", string(debug.Stack())))
		}
		// A session that ends mid-message (a vanished MTA sends no abort)
		// releases the message's signature goroutines here.
		m.abort()
	}()
	flush := func() error {
		if len(m.out) == 0 {
			return nil
		}
		if err := c.SetWriteDeadline(time.Now().Add(s.opts.IdleTimeout)); err != nil {
			return err
		}
		_, err := c.Write(m.out)
		m.out = m.out[:0]
		return err
	}
	// Before the reader waits for the MTA: send the replies gathered so
	// far in one write (the end of message's inserted fields and its
	// accept, or several replies to pipelined packets), and bound the
	// wait.
	r := newPacketReader(c, func() error {
		if err := flush(); err != nil {
			return err
		}
		return c.SetReadDeadline(time.Now().Add(s.opts.IdleTimeout))
	})
	for {
		p, err := r.next()
		if err == nil {
			var done bool
			if done, err = m.handle(p); done {
				if err := flush(); err != nil {
					log().Debug("milter reply failed", slog.String("err", err.Error()))
				}
				return
			}
		}
		if err == nil {
			continue
		}
		var pe *protocolError
		var ne net.Error
		switch {
		case errors.As(err, &pe):
			s.metrics.protocolErrors.WithLabelValues(pe.reason).Inc()
			log().Warn("milter session closed: protocol error", slog.String("reason", pe.reason),
				slog.String("detail", pe.detail), slog.String("queue_id", m.queueID))
		case errors.Is(err, io.EOF):
			// The MTA hung up between packets.
		case errors.As(err, &ne) && ne.Timeout():
			s.metrics.timeouts.Inc()
			log().Info("milter session idle, closed", slog.Duration("timeout", s.opts.IdleTimeout),
				slog.String("queue_id", m.queueID))
		default:
			log().Debug("milter connection failed", slog.String("err", err.Error()))
		}
		return
	}
}

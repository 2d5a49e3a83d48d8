package milter

import (
	"context"
	"encoding/binary"
	"log/slog"
	"strings"
	"sync"
	"time"

	"dkimd/internal/signer"
)

// Protocol is what the milter asks of the MTA, of which it gets what the
// MTA offers: the MTA may skip every stage but the header and the body, and
// wait for no reply but the end of message's, so that header fields and
// body chunks stream in without a round trip each. bench/sign's transport
// floor asks the same.
const Protocol = flagNoConnect | flagNoHelo | flagNoMail | flagNoRcpt | flagNoUnknown | flagNoData |
	flagNoReplyConnect | flagNoReplyHelo | flagNoReplyMail | flagNoReplyRcpt | flagNoReplyData |
	flagNoReplyUnknown | flagNoReplyHeader | flagNoReplyEOH | flagNoReplyBody

// maxVersion is the milter protocol version spoken: 6, Postfix's and
// Sendmail 8.14's.
const maxVersion = 6

// Caps on what one message may make a session hold. Beyond them the
// message is not signed (the signer would refuse it anyway) and what
// follows of its header is not kept.
const (
	maxHeaderBlock  = 1 << 20 // bytes of header fields, as the sign endpoint's header cap
	maxHeaderFields = 10_000
)

// stage is where a session is in the current message.
type stage uint8

const (
	stageIdle   stage = iota // between messages
	stageHeader              // header fields arriving
	stageBody                // after the end of header
)

// session is the protocol state of one MTA connection, which may carry
// several messages, apart from the socket: handle takes one packet and
// appends the replies it calls for to out, which the connection sends.
type session struct {
	s          *Server
	negotiated bool
	version    uint32
	protocol   ProtocolFlag // what was agreed: the stages skipped, the replies spared

	stage   stage
	header  []byte
	fields  int
	msg     Message
	refusal string // set once the message is known to pass unsigned: its reason
	queueID string // Postfix's queue id ({i} macro), for the log
	out     []byte // replies not yet sent
}

// handle runs one packet. done means the MTA has quit; an error (a
// *protocolError, or a failure to reply) ends the session.
func (m *session) handle(p []byte) (done bool, err error) {
	c, err := parsePacket(p)
	if err != nil {
		return false, err
	}
	if !m.negotiated {
		switch c.code {
		case cmdOptNeg:
			return false, m.negotiate(c)
		case cmdQuit, cmdQuitNC, cmdAbort:
			return c.code == cmdQuit, nil
		}
		return false, malformed(reasonOutOfOrder, "%q before option negotiation", c.code)
	}
	switch c.code {
	case cmdOptNeg:
		// A new negotiation starts the session afresh.
		m.endMessage()
		return false, m.negotiate(c)
	case cmdMacro:
		m.macros(c.data)
	case cmdConnect:
		m.reply(flagNoReplyConnect, replyContinue)
	case cmdHelo:
		m.reply(flagNoReplyHelo, replyContinue)
	case cmdMail:
		// A new envelope: whatever came before it is over.
		m.abort()
		m.reply(flagNoReplyMail, replyContinue)
	case cmdRcpt:
		m.reply(flagNoReplyRcpt, replyContinue)
	case cmdData:
		m.reply(flagNoReplyData, replyContinue)
	case cmdUnknown:
		m.reply(flagNoReplyUnknown, replyContinue)
	case cmdHeader:
		if m.stage == stageBody {
			return false, malformed(reasonOutOfOrder, "header field after the end of header")
		}
		m.stage = stageHeader
		m.headerField(c.name, c.value)
		m.replyOrAnswer(flagNoReplyHeader)
	case cmdEOH:
		if m.stage == stageBody {
			return false, malformed(reasonOutOfOrder, "second end of header")
		}
		m.stage = stageBody
		m.begin()
		m.replyOrAnswer(flagNoReplyEOH)
	case cmdBody:
		if m.stage != stageBody {
			return false, malformed(reasonOutOfOrder, "body chunk before the end of header")
		}
		m.body(c.data)
		m.replyOrAnswer(flagNoReplyBody)
	case cmdEOM:
		if m.stage != stageBody {
			return false, malformed(reasonOutOfOrder, "end of message before the end of header")
		}
		m.body(c.data)
		m.endOfMessage()
	case cmdAbort:
		m.abort()
	case cmdQuitNC:
		// The MTA keeps the connection for another session, which starts
		// with a new negotiation.
		m.abort()
		m.negotiated = false
	case cmdQuit:
		m.abort()
		return true, nil
	}
	return false, nil
}

// negotiate answers the MTA's offer with the part of Protocol it offers. A
// milter that insisted on every option (as go-milter's own negotiation
// does) would leave an MTA that cannot spare the replies unsigned; this
// one takes a reply per event instead.
func (m *session) negotiate(c command) error {
	switch {
	case c.version < 2:
		return malformed(reasonNegotiation, "the MTA speaks milter protocol version %d, 2 or later is needed", c.version)
	case c.actions&actionAddHeaders == 0:
		return malformed(reasonNegotiation, "the MTA does not let milters add header fields")
	}
	m.negotiated = true
	m.version = min(c.version, maxVersion)
	m.protocol = Protocol & c.protocol
	// Inserting a header field is all the milter does; no SMFIP_MDS_*:
	// the body comes in the 64 KiB chunks every MTA sends.
	m.out = appendPacket(m.out, replyOptNeg, 12)
	m.out = binary.BigEndian.AppendUint32(m.out, m.version)
	m.out = binary.BigEndian.AppendUint32(m.out, actionAddHeaders)
	m.out = binary.BigEndian.AppendUint32(m.out, uint32(m.protocol))
	m.s.opts.Log.Debug("milter connection", slog.Uint64("version", uint64(m.version)),
		slog.String("protocol", m.protocol.String()))
	return nil
}

// macros keeps the queue id, the one macro the milter uses (for its log).
// Postfix names it "i", Sendmail "{i}" or "i".
func (m *session) macros(pairs []byte) {
	for len(pairs) > 0 {
		name, rest, _ := cstring(pairs)
		value, rest, _ := cstring(rest)
		pairs = rest
		if string(name) == "i" || string(name) == "{i}" {
			m.queueID = string(value)
		}
	}
}

// headerField rebuilds the field as it appears in the message. The MTA
// sends the value without the space after the colon (unless it was asked
// for SMFIP_HDR_LEADSPC, which this milter does not ask) and with LF inside
// folded values; relaxed canonicalization makes both immaterial, and the
// signer turns LF into CRLF.
func (m *session) headerField(name, value []byte) {
	if m.refusal != "" {
		return
	}
	m.fields++
	if m.fields > maxHeaderFields || len(m.header)+len(name)+len(value)+4 > maxHeaderBlock {
		m.refuse(signer.CodeHeaderTooLarge, slog.Int("fields", m.fields), slog.Int("bytes", len(m.header)))
		m.header = m.header[:0]
		return
	}
	m.header = append(m.header, name...)
	m.header = append(m.header, ':')
	if len(value) > 0 && value[0] != ' ' && value[0] != '\t' {
		m.header = append(m.header, ' ')
	}
	m.header = append(m.header, value...)
	m.header = append(m.header, '\r', '\n')
}

// begin is the end of the header: pick the keys now.
func (m *session) begin() {
	if m.refusal != "" {
		return
	}
	ctx := newLookupContext(m.s.opts.Timeout)
	defer ctx.release()
	msg, err := m.s.opts.Handler.Begin(ctx, m.header)
	if err != nil {
		m.failed(err)
		return
	}
	m.msg = msg
}

// lookupContext bounds the key lookup of one message (Options.Timeout) as
// context.WithTimeout does, but arms no timer until something waits on it:
// the signer's key choice is almost always cached and then never looks at
// its context, and a timer set and stopped on every message costs more
// than the rest of Begin's bookkeeping. The first Done or Err makes the
// timed context, which ends at the deadline fixed when the message began.
type lookupContext struct {
	context.Context // Background: no values, no parent to cancel it
	deadline        time.Time

	mu       sync.Mutex // Done and Err may come from the store's goroutines
	timed    context.Context
	stop     context.CancelFunc
	released bool
}

func newLookupContext(timeout time.Duration) *lookupContext {
	return &lookupContext{Context: context.Background(), deadline: time.Now().Add(timeout)}
}

func (c *lookupContext) Deadline() (time.Time, bool) { return c.deadline, true }
func (c *lookupContext) Done() <-chan struct{}       { return c.ctx().Done() }
func (c *lookupContext) Err() error                  { return c.ctx().Err() }

// canceledContext is what a lookupContext reads as once released without a
// timed context: cancelled, as context.WithTimeout's after its cancel.
var canceledContext = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

func (c *lookupContext) ctx() context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.timed != nil:
	case c.released:
		return canceledContext
	default:
		c.timed, c.stop = context.WithDeadline(context.Background(), c.deadline)
	}
	return c.timed
}

// release ends the lookup, as the cancel of context.WithTimeout.
func (c *lookupContext) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.released = true
	if c.stop != nil {
		c.stop()
	}
}

// body streams a chunk into the signatures: it is hashed, never kept.
func (m *session) body(chunk []byte) {
	if m.msg == nil || len(chunk) == 0 {
		return
	}
	if _, err := m.msg.Write(chunk); err != nil {
		m.failed(err)
	}
}

// endOfMessage finishes the signatures and inserts them at the top, RSA
// first, or answers for a message that passes unsigned.
func (m *session) endOfMessage() {
	defer m.endMessage()
	if m.refusal != "" {
		m.answer()
		return
	}
	msg := m.msg
	m.msg = nil
	if msg == nil { // begin neither refused nor began: cannot happen
		m.refuse(reasonError, slog.String("err", "no message at the end of message"))
		m.answer()
		return
	}
	res, err := msg.Close()
	if err != nil {
		m.failed(err)
		m.answer()
		return
	}
	// Each insert at index 0 goes on top: the last one sent ends up first.
	for i := len(res.Signatures) - 1; i >= 0; i-- {
		m.out = appendInsertHeader(m.out, res.Signatures[i].Field)
	}
	m.out = appendPacket(m.out, replyAccept, 0)
	m.s.metrics.signed.Inc()
	// Checked first: the attributes would cost allocations on every
	// message while debug logging is off.
	if m.s.opts.Log.Enabled(context.Background(), slog.LevelDebug) {
		m.s.opts.Log.Debug("message signed", slog.String("queue_id", m.queueID), slog.String("domain", res.Domain),
			slog.String("mode", res.Mode), slog.String("selector", strings.Join(res.Selectors(), ",")))
	}
}

// reply sends code unless the agreed protocol spares the reply to this
// stage: a reply not awaited would be read as the answer to the next one.
func (m *session) reply(spared ProtocolFlag, code byte) {
	if m.protocol&spared == 0 {
		m.out = appendPacket(m.out, code, 0)
	}
}

// replyOrAnswer replies to a stage of the message. Once the message is
// known to pass unsigned, the first reply due is the final answer, which
// spares the MTA sending the rest of it; with the replies spared, that
// answer waits for the end of message.
func (m *session) replyOrAnswer(spared ProtocolFlag) {
	if m.protocol&spared != 0 {
		return
	}
	if m.refusal != "" {
		m.answer()
		m.endMessage()
		return
	}
	m.out = appendPacket(m.out, replyContinue, 0)
}

// answer is the final reply for a message that passes unsigned.
func (m *session) answer() {
	code := byte(replyAccept)
	if m.s.tempfail {
		code = replyTempfail
	}
	m.out = appendPacket(m.out, code, 0)
}

// failed records why a message will not be signed: a refusal (the message
// as it is cannot be signed) or a failure of dkimd.
func (m *session) failed(err error) {
	if r, ok := signer.AsRefusal(err); ok {
		m.refuse(r.Code, slog.String("detail", r.Reason))
		return
	}
	m.refuse(reasonError, slog.String("err", err.Error()))
}

// refuse marks the message as one that passes unsigned (or is tempfailed,
// per Options.OnError), counts it and logs why, once.
func (m *session) refuse(reason string, attrs ...slog.Attr) {
	if m.refusal != "" {
		return
	}
	m.refusal = reason
	if m.msg != nil {
		m.msg.Abort()
		m.msg = nil
	}
	outcome, level, msg := outcomeRefused, slog.LevelInfo, "message passed unsigned"
	switch {
	case m.s.tempfail:
		outcome, msg = outcomeTempfail, "message tempfailed"
	case reason == reasonError:
		outcome = outcomeError
	}
	if reason == reasonError {
		level = slog.LevelError
	}
	m.s.metrics.messages.WithLabelValues(outcome).Inc()
	if !m.s.tempfail {
		m.s.metrics.unsigned.WithLabelValues(reason).Inc()
	}
	attrs = append(attrs, slog.String("reason", reason), slog.String("queue_id", m.queueID))
	m.s.opts.Log.LogAttrs(context.Background(), level, msg, attrs...)
}

// abort ends the message without an answer: the MTA gave up on it (or is
// gone), and its signature goroutines end here.
func (m *session) abort() {
	if m.stage != stageIdle && m.refusal == "" {
		m.s.metrics.messages.WithLabelValues(outcomeAborted).Inc()
	}
	m.endMessage()
}

// endMessage forgets the message; the next one starts afresh.
func (m *session) endMessage() {
	if m.msg != nil {
		m.msg.Abort()
		m.msg = nil
	}
	if cap(m.header) > keepBuffer {
		m.header = nil
	}
	m.stage, m.header, m.fields, m.refusal, m.queueID = stageIdle, m.header[:0], 0, "", ""
}

// appendPacket appends a packet's length and code; the caller appends its
// n bytes of data.
func appendPacket(b []byte, code byte, n int) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(1+n))
	return append(b, code)
}

// appendInsertHeader appends SMFIR_INSHEADER at index 0 for a field as the
// signer gives it ("DKIM-Signature: v=1; …\r\n\t…\r\n"): the name, and the
// value without the space after the colon (the MTA adds it, since the
// milter did not ask for SMFIP_HDR_LEADSPC), without the final line end and
// with LF for the inner CRLF, as the MTA keeps header fields.
func appendInsertHeader(b []byte, field string) []byte {
	name, value, _ := strings.Cut(field, ":")
	value = strings.TrimSuffix(strings.TrimPrefix(value, " "), "\r\n")
	start := len(b)
	b = appendPacket(b, replyInsHeader, 0)
	b = binary.BigEndian.AppendUint32(b, 0)
	b = append(b, name...)
	b = append(b, 0)
	for {
		i := strings.Index(value, "\r\n")
		if i < 0 {
			break
		}
		b = append(b, value[:i]...)
		b = append(b, '\n')
		value = value[i+2:]
	}
	b = append(b, value...)
	b = append(b, 0)
	binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start-4))
	return b
}

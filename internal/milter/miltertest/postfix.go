// Package miltertest holds what tests and benchmarks of milters share.
package miltertest

import gomilter "github.com/emersion/go-milter"

// What Postfix 3.x offers a milter (milter_protocol = 6, the default), for
// clients that stand in for it: every stage can be skipped and every reply
// but the end of message's spared (the SMFIP_NR_* flags), and the header
// value may keep its leading space. Each milter takes what it asks for.
const (
	PostfixActions = gomilter.OptAddHeader | gomilter.OptChangeBody | gomilter.OptAddRcpt | gomilter.OptRemoveRcpt |
		gomilter.OptChangeHeader | gomilter.OptQuarantine | gomilter.OptChangeFrom | gomilter.OptAddRcptWithArgs |
		gomilter.OptSetSymList
	PostfixProtocol = gomilter.OptNoConnect | gomilter.OptNoHelo | gomilter.OptNoMailFrom | gomilter.OptNoRcptTo |
		gomilter.OptNoBody | gomilter.OptNoHeaders | gomilter.OptNoEOH | gomilter.OptNoUnknown | gomilter.OptNoData |
		gomilter.OptSkip | gomilter.OptRcptRej | gomilter.OptHeaderLeadingSpace |
		gomilter.OptNoConnReply | gomilter.OptNoHeloReply | gomilter.OptNoMailReply | gomilter.OptNoRcptReply |
		gomilter.OptNoDataReply | gomilter.OptNoUnknownReply | gomilter.OptNoHeaderReply | gomilter.OptNoEOHReply |
		gomilter.OptNoBodyReply
)

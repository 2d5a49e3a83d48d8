package dkim

// SignedField is a header field that every signature covers, and whether
// it is also signed when the message lacks it.
type SignedField struct {
	Name string
	// Absent: listed in h= once even when the message has no such field,
	// so that one added later breaks the signature. Only for fields that
	// nothing on the way to the recipient adds (docs/operator-guide.md,
	// "Signed header fields").
	Absent bool
}

// SignedFields are the header fields every signature covers, in the order
// h= lists them. Each that is present is listed once per instance plus once
// more (oversigning, RFC 6376 §8.15): the extra entry signs the absence of
// a further instance, so a second Subject or To added above the original
// breaks the signature instead of being shown to the reader. The reasons
// per field are in docs/operator-guide.md, "Signed header fields"; keep the
// two in step.
//
// Never here: trace fields (Received, Return-Path, Authentication-Results,
// ARC-*) and anything else that MTAs add or rewrite on the way by design;
// signing them would break the signature at the next hop.
var SignedFields = []SignedField{
	{"From", true},                       // who the message is from: what DMARC aligns on; a message without one is not signed
	{"Reply-To", true},                   // where answers go: a phisher's first choice to add
	{"Sender", true},                     // shown as "on behalf of" by many readers
	{"Subject", true},                    // what the reader reads first; no MTA adds one
	{"Date", false},                      // a submission server adds one to a message that lacks it (RFC 6409 §8.2)
	{"To", false},                        // some MTAs add "To: undisclosed-recipients:;" to a message without one
	{"Cc", true},                         // recipients the reader sees; no MTA adds it
	{"Message-ID", false},                // added to a message that lacks one (RFC 6409 §8.3)
	{"In-Reply-To", true},                // threading: which conversation the message claims to belong to
	{"References", true},                 // threading, as In-Reply-To
	{"MIME-Version", false},              // added by an MTA that converts 8-bit content to 7-bit (RFC 6152 §3)
	{"Content-Type", false},              // added with MIME-Version by MTAs that convert content
	{"Content-Transfer-Encoding", false}, // as Content-Type
	{"List-Id", true},                    // mailbox providers file and trust list mail by it
	{"List-Unsubscribe", true},           // RFC 8058: providers show one-click unsubscribe only when signed
	{"List-Unsubscribe-Post", true},      // RFC 8058 §4: must be signed with List-Unsubscribe
}

// Select returns the h= list of a signature of this header, per
// SignedFields, and appends to data the relaxed canonical form of the
// fields it names, in the order a verifier hashes them: for a name listed
// several times, the last instance first, then upwards (RFC 6376 §5.4.2);
// the entries past the instances there are stand for nothing.
func (h *Header) Select(list []string, data []byte) ([]string, []byte) {
	for _, sf := range SignedFields {
		n := 0
		for i := len(h.fields) - 1; i >= 0; i-- {
			if f := h.fields[i]; h.is(f, sf.Name) {
				data = appendRelaxed(data, h.raw, f)
				list = append(list, sf.Name)
				n++
			}
		}
		if n > 0 || sf.Absent {
			list = append(list, sf.Name)
		}
	}
	return list, data
}

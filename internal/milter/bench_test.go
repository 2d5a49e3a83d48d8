package milter_test

import (
	"strings"
	"testing"

	gomilter "github.com/emersion/go-milter"
	"github.com/prometheus/client_golang/prometheus"

	"dkimd/internal/signer/signertest"
)

// BenchmarkMilter drives messages through one milter session as Postfix
// does; bench/sign (make bench-sign) compares it with OpenDKIM.
func BenchmarkMilter(b *testing.B) {
	f := signertest.New(b)
	addr := startMilterTB(b, f, prometheus.NewRegistry())
	fields := fieldsFor(signertest.AlignedRSA)
	body := strings.Repeat("The quick brown fox jumps over the lazy dog, 0123456789 times.\r\n", 30)
	sess := session(b, addr)
	for b.Loop() {
		for _, fl := range fields {
			if _, err := sess.HeaderField(fl.name, fl.value); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := sess.HeaderEnd(); err != nil {
			b.Fatal(err)
		}
		mods, act, err := sess.BodyReadFrom(strings.NewReader(body))
		if err != nil || act.Code != gomilter.ActAccept || len(mods) != 1 {
			b.Fatalf("%v %v %v", mods, act, err)
		}
	}
}

package domainname

import (
	"errors"
	"strings"
	"testing"
)

// FuzzNormalize checks that whatever a brand sends either fails with an
// *Invalid or comes back as a canonical name that is stable, short enough
// and maps to a dash label without dots.
func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"spamtrap.dk", "Bücher.DE.", "*.x.com", "1.2.3.4", "a..b", "xn--bcher-kva.de", "foo.oxcloud.zone", "\x00", "ä.ä"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := Normalize(in, "oxcloud.zone")
		if err != nil {
			var inv *Invalid
			if !errors.As(err, &inv) {
				t.Fatalf("Normalize(%q) error %v is not *Invalid", in, err)
			}
			return
		}
		if len(got) > 253 || got != strings.ToLower(got) || strings.HasSuffix(got, ".") {
			t.Fatalf("Normalize(%q) = %q is not canonical", in, got)
		}
		again, err := Normalize(got, "oxcloud.zone")
		if err != nil || again != got {
			t.Fatalf("Normalize is not idempotent: %q -> %q -> %q, %v", in, got, again, err)
		}
		if strings.Contains(Label(got), ".") {
			t.Fatalf("Label(%q) keeps a dot", got)
		}
	})
}

package zone

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/miekg/dns"
)

// TSIGKey is the shared secret of zone transfers and NOTIFY.
type TSIGKey struct {
	Name      string // FQDN, lower case
	Algorithm string // e.g. hmac-sha256.
	Secret    string // base64
}

var tsigAlgorithms = map[string]string{
	"hmac-sha1": dns.HmacSHA1, "hmac-sha224": dns.HmacSHA224, "hmac-sha256": dns.HmacSHA256,
	"hmac-sha384": dns.HmacSHA384, "hmac-sha512": dns.HmacSHA512,
}

// ParseTSIGKey reads "name algorithm base64-secret".
func ParseTSIGKey(text string) (TSIGKey, error) {
	f := strings.Fields(text)
	if len(f) != 3 {
		return TSIGKey{}, errors.New(`zone: TSIG key must be "name algorithm base64-secret"`)
	}
	alg, ok := tsigAlgorithms[strings.ToLower(strings.TrimSuffix(f[1], "."))]
	if !ok {
		return TSIGKey{}, fmt.Errorf("zone: TSIG algorithm %q is not one of hmac-sha1, -sha224, -sha256, -sha384, -sha512", f[1])
	}
	if b, err := base64.StdEncoding.DecodeString(f[2]); err != nil || len(b) < 16 {
		return TSIGKey{}, errors.New("zone: TSIG secret must be base64 of at least 16 octets")
	}
	if _, ok := dns.IsDomainName(f[0]); !ok {
		return TSIGKey{}, fmt.Errorf("zone: TSIG key name %q is not a domain name", f[0])
	}
	return TSIGKey{Name: fqdn(f[0]), Algorithm: alg, Secret: f[2]}, nil
}

// LoadTSIGKey reads a TSIG key file.
func LoadTSIGKey(path string) (TSIGKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return TSIGKey{}, fmt.Errorf("zone: TSIG key file: %w", err)
	}
	return ParseTSIGKey(string(b))
}

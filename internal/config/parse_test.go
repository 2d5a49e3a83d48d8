package config

import (
	"io"
	"reflect"
	"testing"
)

func TestParseAcceptsFlagsAfterArguments(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		dataDir string
		rest    []string
	}{
		{"flags first", []string{"--data-dir", "/x", "acme"}, "/x", []string{"acme"}},
		{"flags last", []string{"acme", "--data-dir", "/x"}, "/x", []string{"acme"}},
		{"flags between", []string{"acme", "--data-dir=/x", "example.com"}, "/x", []string{"acme", "example.com"}},
		{"double dash", []string{"--", "acme", "--data-dir"}, "./data", []string{"acme", "--data-dir"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, rest, err := Parse("test", tc.args, func(string) string { return "" }, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if c.DataDir != tc.dataDir || !reflect.DeepEqual(rest, tc.rest) {
				t.Fatalf("DataDir %q rest %q, want %q %q", c.DataDir, rest, tc.dataDir, tc.rest)
			}
		})
	}
}

func TestOffDisablesListenersFromTheEnvironment(t *testing.T) {
	env := map[string]string{"DKIMD_MILTER_ADDR": "off", "DKIMD_SIGN_ADDR": "OFF", "DKIMD_DNS_ADDR": "off", "DKIMD_OPS_ADDR": "off"}
	c, _, err := Parse("test", nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.MilterAddr != "" || c.SignAddr != "" || c.DNSAddr != "" || c.OpsAddr != "" {
		t.Fatalf("listeners still on: milter %q sign %q dns %q ops %q", c.MilterAddr, c.SignAddr, c.DNSAddr, c.OpsAddr)
	}
}

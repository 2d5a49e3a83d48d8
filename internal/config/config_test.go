package config_test

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"dkimd/internal/config"
)

func envFrom(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func noEnv(string) string { return "" }

// allFlags declares the flags on a fresh FlagSet, as serve and every
// subcommand do.
func allFlags(t *testing.T) []*flag.Flag {
	t.Helper()
	var c config.Config
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	c.FlagSet(fs, noEnv)
	var out []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) { out = append(out, f) })
	if len(out) < 20 {
		t.Fatalf("only %d flags declared", len(out))
	}
	return out
}

func envName(flagName string) string {
	return "DKIMD_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// sample is a valid non-default value for a flag, so that setting it through
// the environment is visible in the Config.
func sample(t *testing.T, name string) string {
	t.Helper()
	values := map[string]string{
		"data-dir":            "/var/lib/dkimd-test",
		"database-url":        "postgres://u@db.example:5432/dkimd",
		"master-key-file":     "/run/secrets/kek",
		"api-addr":            "127.0.0.1:18080",
		"operator-token-file": "/run/secrets/operator-token",
		"tls-cert-file":       "/etc/dkimd/cert.pem",
		"tls-key-file":        "/etc/dkimd/key.pem",
		"dns-addr":            "127.0.0.1:15353",
		"zone":                "dkim.example.net",
		"ns":                  "ns1.dkim.example.net,ns2.dkim.example.net",
		"ns-addrs":            "ns1.dkim.example.net=192.0.2.1,ns2.dkim.example.net=192.0.2.2",
		"soa-mbox":            "dns.example.net",
		"soa-refresh":         "5h",
		"soa-retry":           "2h",
		"soa-expire":          "400h",
		"soa-minimum":         "10m",
		"record-ttl":          "30m",
		"secondaries":         "192.0.2.53:53",
		"xfr-allow":           "192.0.2.0/24",
		"tsig-key-file":       "/etc/dkimd/tsig.key",
		"reconcile-interval":  "45s",
		"sign-addr":           "127.0.0.1:18081",
		"sign-token":          "sign-secret",
		"sign-max-bytes":      "2048",
		"milter-addr":         "127.0.0.1:18891",
		"ops-addr":            "127.0.0.1:19090",
		"resolver":            "192.0.2.10:53",
		"publish-lead-time":   "100h",
		"rotation-interval":   "2000h",
		"retire-grace":        "200h",
		"key-pool-size":       "3",
		"log-level":           "debug",
		"sign-expiry":         "240h",
		"rsa-backend":         "go",
		"milter-timeout":      "2m",
		"milter-max-conns":    "50",
		"milter-on-error":     "tempfail",
		"dns-rrl":             "0",
		"dns-rrl-slip":        "3",
		"dns-rrl-exempt":      "192.0.2.0/24,2001:db8::/56",
		"dns-tcp-max":         "100",
	}
	if name == "sign-token-file" {
		// The only flag whose value is read at parse time.
		path := filepath.Join(t.TempDir(), "sign.token")
		if err := os.WriteFile(path, []byte("sign-secret-from-file\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	v, ok := values[name]
	if !ok {
		t.Fatalf("flag --%s has no sample value in this test; add one", name)
	}
	return v
}

// TestEveryFlagHasEnvTwin sets each flag through its DKIMD_* variable alone
// and checks that the parsed Config differs from the defaults, and that the
// help text names the variable.
func TestEveryFlagHasEnvTwin(t *testing.T) {
	defaults, _, err := config.Parse("test", nil, noEnv, io.Discard)
	if err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	// Flags whose valid values need a partner flag set too.
	partners := map[string][]string{
		"tls-cert-file": {"tls-key-file"},
		"tls-key-file":  {"tls-cert-file"},
		"secondaries":   {"tsig-key-file"},
		"xfr-allow":     {"tsig-key-file"},
		"ns":            {"ns-addrs", "zone"},
		"ns-addrs":      {"ns", "zone"},
		"sign-addr":     {},
	}
	for _, f := range allFlags(t) {
		t.Run(f.Name, func(t *testing.T) {
			if !strings.Contains(f.Usage, envName(f.Name)) {
				t.Errorf("usage of --%s does not name %s: %q", f.Name, envName(f.Name), f.Usage)
			}
			env := map[string]string{envName(f.Name): sample(t, f.Name)}
			for _, p := range partners[f.Name] {
				env[envName(p)] = sample(t, p)
			}
			got, _, err := config.Parse("test", nil, envFrom(env), io.Discard)
			if err != nil {
				t.Fatalf("%s=%q: %v", envName(f.Name), env[envName(f.Name)], err)
			}
			if configEqual(got, defaults) {
				t.Errorf("%s=%q left the config at its defaults", envName(f.Name), env[envName(f.Name)])
			}
		})
	}
}

// configEqual compares by %+v: fmt prints maps sorted, so equal configs
// print equal.
func configEqual(a, b config.Config) bool {
	return fmt.Sprintf("%+v", a) == fmt.Sprintf("%+v", b)
}

func TestFlagsWinOverEnv(t *testing.T) {
	env := envFrom(map[string]string{
		"DKIMD_ZONE":         "env.example",
		"DKIMD_API_ADDR":     "127.0.0.1:1111",
		"DKIMD_RETIRE_GRACE": "100h",
		"DKIMD_LOG_LEVEL":    "error",
		"DKIMD_DNS_ADDR":     "127.0.0.1:2222",
	})
	c, rest, err := config.Parse("test", []string{"--zone", "flag.example", "--api-addr=127.0.0.1:3333", "--retire-grace", "50h", "extra"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, got, want string }{
		{"zone", c.Zone, "flag.example"},
		{"api-addr", c.APIAddr, "127.0.0.1:3333"},
		{"retire-grace", c.RetireGrace.String(), (50 * time.Hour).String()},
		{"log-level (env only)", c.LogLevel, "error"},
		{"dns-addr (env only)", c.DNSAddr, "127.0.0.1:2222"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %q, want %q", tc.name, tc.got, tc.want)
		}
	}
	if len(rest) != 1 || rest[0] != "extra" {
		t.Errorf("rest = %q", rest)
	}
}

func TestInvalidIsRefusedNamingTheFlag(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		flag string
	}{
		{"database url scheme", []string{"--database-url", "mysql://x"}, nil, "--database-url"},
		{"empty data dir", []string{"--data-dir", ""}, nil, "--data-dir"},
		{"api addr not host:port", []string{"--api-addr", "8080"}, nil, "--api-addr"},
		{"api addr empty", []string{"--api-addr", ""}, nil, "--api-addr"},
		{"dns addr", []string{"--dns-addr", "nope"}, nil, "--dns-addr"},
		{"ops addr", []string{"--ops-addr", "localhost"}, nil, "--ops-addr"},
		{"milter addr", []string{"--milter-addr", "x"}, nil, "--milter-addr"},
		{"tls cert without key", []string{"--tls-cert-file", "/c.pem"}, nil, "--tls-cert-file"},
		{"tls key without cert", []string{"--tls-key-file", "/k.pem"}, nil, "--tls-cert-file"},
		{"single-label zone", []string{"--zone", "localhost"}, nil, "--zone"},
		{"in-zone ns without glue", []string{"--ns", "ns2.oxcloud.zone"}, nil, "--ns-addrs"},
		{"glue outside the zone", []string{"--ns", "ns.example.org", "--ns-addrs", "ns.example.org=192.0.2.1"}, nil, "--ns-addrs"},
		{"glue not name=ip", []string{"--ns-addrs", "ns1.oxcloud.zone"}, nil, "--ns-addrs"},
		{"soa refresh too low", []string{"--soa-refresh", "1h"}, nil, "--soa-refresh"},
		{"soa minimum too high", []string{"--soa-minimum", "48h"}, nil, "--soa-minimum"},
		{"record ttl", []string{"--record-ttl", "0s"}, nil, "--record-ttl"},
		{"secondaries without tsig", []string{"--secondaries", "192.0.2.1:53"}, nil, "--tsig-key-file"},
		{"xfr allow without tsig", []string{"--xfr-allow", "192.0.2.0/24"}, nil, "--tsig-key-file"},
		{"xfr allow garbage", []string{"--xfr-allow", "not-an-ip", "--tsig-key-file", "/k"}, nil, "--xfr-allow"},
		{"secondary not host:port", []string{"--secondaries", "192.0.2.1", "--tsig-key-file", "/k"}, nil, "--secondaries"},
		{"reconcile interval", []string{"--reconcile-interval", "10ms"}, nil, "--reconcile-interval"},
		{"sign off loopback without token", []string{"--sign-addr", ":8081"}, nil, "--sign-token"},
		{"sign max bytes", []string{"--sign-max-bytes", "10"}, nil, "--sign-max-bytes"},
		{"resolver", []string{"--resolver", "192.0.2.1"}, nil, "--resolver"},
		{"rotation shorter than lead time", []string{"--rotation-interval", "24h"}, nil, "--rotation-interval"},
		{"negative retire grace", []string{"--retire-grace", "-1h"}, nil, "--retire-grace"},
		{"key pool size", []string{"--key-pool-size", "-1"}, nil, "--key-pool-size"},
		{"log level", []string{"--log-level", "loud"}, nil, "--log-level"},
		{"env value that does not parse", nil, map[string]string{"DKIMD_RECORD_TTL": "an hour"}, "--record-ttl"},
		{"env value refused by validation", nil, map[string]string{"DKIMD_ZONE": "localhost"}, "--zone"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			_, _, err := config.Parse("test", tc.args, envFrom(tc.env), &out)
			if err == nil {
				t.Fatalf("accepted %q %v", tc.args, tc.env)
			}
			if !strings.Contains(err.Error(), tc.flag) {
				t.Errorf("error %q does not name %s", err, tc.flag)
			}
		})
	}
}

func TestValidDefaults(t *testing.T) {
	c, _, err := config.Parse("test", nil, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, got, want string }{
		{"data-dir", c.DataDir, "./data"},
		{"database-url", c.DatabaseURL, ""},
		{"api-addr", c.APIAddr, ":8080"},
		{"dns-addr", c.DNSAddr, ":5353"},
		{"sign-addr", c.SignAddr, "127.0.0.1:8081"},
		{"milter-addr", c.MilterAddr, "127.0.0.1:8891"},
		{"ops-addr", c.OpsAddr, "127.0.0.1:9090"},
		{"zone", c.Zone, "oxcloud.zone"},
		{"resolver", c.Resolver, ""},
		{"ns", strings.Join(c.NS, ","), "ns1.oxcloud.zone"},
		{"soa-mbox", c.SOAMbox, "hostmaster.oxcloud.zone"},
		{"publish-lead-time", c.PublishLeadTime.String(), (96 * time.Hour).String()},
		{"rotation-interval", c.RotationInterval.String(), (180 * 24 * time.Hour).String()},
		{"retire-grace", c.RetireGrace.String(), (7 * 24 * time.Hour).String()},
	} {
		if tc.got != tc.want {
			t.Errorf("default %s = %q, want %q (docs/operator-guide.md, Configure)", tc.name, tc.got, tc.want)
		}
	}
	// Empty disables the optional listeners.
	if _, _, err := config.Parse("test", []string{"--milter-addr=", "--sign-addr=", "--dns-addr=", "--ops-addr="}, noEnv, io.Discard); err != nil {
		t.Errorf("disabling the optional listeners: %v", err)
	}
}

func TestHelpDocumentsEveryFlag(t *testing.T) {
	var out bytes.Buffer
	_, _, err := config.Parse("dkimd serve", []string{"--help"}, noEnv, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: err = %v, want flag.ErrHelp", err)
	}
	help := out.String()
	for _, f := range allFlags(t) {
		if !strings.Contains(help, "-"+f.Name+" ") && !strings.Contains(help, "-"+f.Name+"\n") {
			t.Errorf("--help does not list -%s", f.Name)
		}
		if !strings.Contains(help, envName(f.Name)) {
			t.Errorf("--help does not name %s", envName(f.Name))
		}
	}
}

package config_test

import (
	"flag"
	"io"
	"strings"
	"testing"

	"dkimd/internal/config"
)

// TestGroupsReadOnlyTheirFlags: a command of the store group neither
// declares nor validates serve's flags, and reads no environment twin of
// theirs; serve's set is every group.
func TestGroupsReadOnlyTheirFlags(t *testing.T) {
	env := envFrom(map[string]string{
		"DKIMD_DATA_DIR":        "/srv/dkimd",
		"DKIMD_ZONE":            "localhost", // invalid, but not the store group's
		"DKIMD_SIGN_TOKEN_FILE": "/does/not/exist",
		"DKIMD_API_ADDR":        "nonsense",
	})
	fs := flag.NewFlagSet("brand list", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c, rest, err := config.ParseFlags(fs, config.StoreFlags, []string{"acme"}, env)
	if err != nil {
		t.Fatalf("store flags: %v", err)
	}
	if c.DataDir != "/srv/dkimd" || c.APIAddr != "" || c.Zone != "" || len(rest) != 1 {
		t.Errorf("config %+v, rest %q", c, rest)
	}
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	if got := strings.Join(names, ","); got != "data-dir,database-url,log-level" {
		t.Errorf("store group declares %s", got)
	}

	fs = flag.NewFlagSet("maildomain add", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if _, _, err := config.ParseFlags(fs, config.StoreFlags|config.ZoneFlags, nil, env); err == nil || !strings.Contains(err.Error(), "--zone") {
		t.Errorf("zone group with DKIMD_ZONE=localhost: %v, want an error naming --zone", err)
	}

	if _, _, err := config.Parse("serve", nil, env, io.Discard); err == nil {
		t.Error("serve accepted DKIMD_API_ADDR=nonsense")
	}
}

// TestDefaultTextAndTable: computed defaults read as the guide means them,
// and durations without trailing zero units.
func TestDefaultTextAndTable(t *testing.T) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var c config.Config
	c.FlagSet(fs, noEnv)
	for name, want := range map[string]string{
		"ns":                 "ns1.<zone>",
		"soa-mbox":           "hostmaster.<zone>",
		"publish-lead-time":  "96h",
		"soa-minimum":        "5m",
		"record-ttl":         "1h",
		"reconcile-interval": "30s",
		"api-addr":           ":8080",
		"database-url":       "",
	} {
		if got := config.DefaultText(fs.Lookup(name)); got != want {
			t.Errorf("default of --%s = %q, want %q", name, got, want)
		}
	}
	table := config.MarkdownTable(fs)
	for _, row := range []string{
		"| `--ns` | `DKIMD_NS` | `ns1.<zone>` | name servers of the zone, comma-separated |",
		"| `--soa-mbox` | `DKIMD_SOA_MBOX` | `hostmaster.<zone>` | SOA responsible mailbox as a domain name |",
	} {
		if !strings.Contains(table, row+"\n") {
			t.Errorf("table lacks the row %s", row)
		}
	}
}

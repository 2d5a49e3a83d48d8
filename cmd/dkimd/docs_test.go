package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"dkimd/internal/config"
)

var updateDocs = flag.Bool("update", false, "rewrite the flag table of docs/operator-guide.md from the flag definitions")

// Markers around the generated table in the operator guide.
const (
	tableBegin = "<!-- flag table: generated from the flag definitions by `go test ./cmd/dkimd -run TestOperatorGuideFlagTable -update`; do not edit by hand -->\n"
	tableEnd   = "<!-- end of flag table -->\n"
)

var operatorGuide = filepath.Join("..", "..", "docs", "operator-guide.md")

// serveTable is the table as the flag definitions that serve reads give it.
func serveTable() string {
	fs := flag.NewFlagSet("dkimd serve", flag.ContinueOnError)
	var c config.Config
	c.Flags(fs, config.AllFlags, func(string) string { return "" })
	return config.MarkdownTable(fs)
}

// TestOperatorGuideFlagTable fails when the operator guide's flag table is
// not what the flag definitions print; -update rewrites it.
func TestOperatorGuideFlagTable(t *testing.T) {
	b, err := os.ReadFile(operatorGuide)
	if err != nil {
		t.Fatal(err)
	}
	guide := string(b)
	i, j := strings.Index(guide, tableBegin), strings.Index(guide, tableEnd)
	if i < 0 || j < i {
		t.Fatalf("%s has no flag table between the markers %q and %q", operatorGuide, tableBegin, tableEnd)
	}
	want := serveTable()
	got := guide[i+len(tableBegin) : j]
	if got == want {
		return
	}
	if *updateDocs {
		if err := os.WriteFile(operatorGuide, []byte(guide[:i+len(tableBegin)]+want+guide[j:]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("the flag table of %s differs from the flag definitions; run go test ./cmd/dkimd -run TestOperatorGuideFlagTable -update\n--- guide\n%s\n--- flags\n%s", operatorGuide, got, want)
}

// TestServeHelpMatchesTheTable: `dkimd serve --help` lists exactly the
// flags of the table, with the same defaults.
func TestServeHelpMatchesTheTable(t *testing.T) {
	var out bytes.Buffer
	if err := run(t.Context(), []string{"serve", "--help"}, noEnv, &out, &out); err != nil {
		t.Fatal(err)
	}
	helpFlags := regexp.MustCompile(`(?m)^  --([a-z0-9-]+)`).FindAllStringSubmatch(out.String(), -1)
	tableFlags := regexp.MustCompile("(?m)^\\| `--([a-z0-9-]+)`").FindAllStringSubmatch(serveTable(), -1)
	if len(helpFlags) != len(tableFlags) || len(helpFlags) < 30 {
		t.Fatalf("serve --help lists %d flags, the table %d", len(helpFlags), len(tableFlags))
	}
	for k := range helpFlags {
		if helpFlags[k][1] != tableFlags[k][1] {
			t.Errorf("flag %d: --help %s, table %s", k, helpFlags[k][1], tableFlags[k][1])
		}
	}
	for _, d := range []string{"default ns1.<zone>;", "default hostmaster.<zone>;", "default ns1.<zone>=127.0.0.1", "default 96h;"} {
		if !strings.Contains(out.String(), d) {
			t.Errorf("serve --help lacks %q", d)
		}
	}
}

// TestTwoReplicasRecipeMovesEveryListener: the operator guide's recipe for
// two replicas on one host gives the second replica its own address for
// every listener serve has, so that it starts beside the first.
func TestTwoReplicasRecipeMovesEveryListener(t *testing.T) {
	b, err := os.ReadFile(operatorGuide)
	if err != nil {
		t.Fatal(err)
	}
	guide := string(b)
	i := strings.Index(guide, "dkimd serve --data-dir /var/lib/dkimd/b")
	if i < 0 {
		t.Fatal("the operator guide has no two-replicas-on-one-host recipe")
	}
	recipe := guide[i:]
	recipe = recipe[:strings.Index(recipe, "```")]
	fs := flag.NewFlagSet("dkimd serve", flag.ContinueOnError)
	var c config.Config
	c.Flags(fs, config.AllFlags, func(string) string { return "" })
	listeners := 0
	fs.VisitAll(func(f *flag.Flag) {
		if !strings.HasSuffix(f.Name, "-addr") {
			return
		}
		listeners++
		m := regexp.MustCompile(`--` + f.Name + ` (\S+)`).FindStringSubmatch(recipe)
		if m == nil {
			t.Errorf("the second replica keeps --%s at its default %s", f.Name, f.DefValue)
			return
		}
		if m[1] == f.DefValue {
			t.Errorf("the second replica's --%s is the default %s", f.Name, m[1])
		}
	})
	if listeners != 5 {
		t.Errorf("serve has %d listener flags; the recipe and its table speak of five", listeners)
	}
}

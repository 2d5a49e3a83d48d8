package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"dkimd/internal/keystore"
	"dkimd/internal/keystore/keystoretest"
	"dkimd/internal/provision"
	"dkimd/internal/provision/provisiontest"
	"dkimd/internal/sealbox"
)

// dkimd runs one command line in-process with env and returns its output
// and the exit status main would give.
func dkimd(t *testing.T, env map[string]string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(t.Context(), args, func(k string) string { return env[k] }, &out, &errOut)
	if err != nil {
		errOut.WriteString("dkimd: " + err.Error() + "\n")
	}
	return out.String(), errOut.String(), exitCode(err)
}

// mustNotExist fails when path exists.
func mustNotExist(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s exists (or cannot be checked: %v)", path, err)
	}
}

// internals are words of SQL, driver or package text that a CLI error line
// must never show.
var internals = []string{"keystore:", "sql:", "constraint", "UNIQUE", "no rows", "provision:", "sealbox:"}

func checkHuman(t *testing.T, stderr string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	last := lines[len(lines)-1]
	for _, w := range internals {
		if strings.Contains(last, w) {
			t.Errorf("error line %q shows %q", last, w)
		}
	}
}

// TestHelpTouchesNothing: every form of help exits 0, writes to stdout, and
// creates neither the data dir nor a KEK (docs/operator-guide.md, "Brands and maildomains").
func TestHelpTouchesNothing(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	env := map[string]string{"DKIMD_DATA_DIR": dataDir}
	for _, args := range [][]string{
		{"help"}, {"--help"}, {"-h"}, {"help", "serve"}, {"help", "brand"}, {"help", "brand", "create"},
		{"serve", "--help"}, {"serve", "-h"}, {"migrate", "--help"}, {"brand", "--help"},
		{"brand", "create", "--help"}, {"brand", "list", "--help"}, {"brand", "delete", "acme", "--help"},
		{"brand", "rotate-secret", "--help"}, {"maildomain", "--help"}, {"maildomain", "add", "--help"},
		{"maildomain", "remove", "--help"}, {"maildomain", "list", "--help"}, {"version"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			stdout, stderr, code := dkimd(t, env, args...)
			if code != 0 {
				t.Fatalf("exit %d; stderr: %s", code, stderr)
			}
			if stdout == "" {
				t.Error("nothing on stdout")
			}
			mustNotExist(t, dataDir)
		})
	}
}

// TestHelpListsOnlyTheFlagsThatApply: serve lists the listeners; brand list
// only the store flags; brand create also the KEK; maildomain add the zone.
func TestHelpListsOnlyTheFlagsThatApply(t *testing.T) {
	for _, tc := range []struct {
		args      []string
		want, not []string
	}{
		{[]string{"serve", "--help"}, []string{"--api-addr", "--dns-addr", "--master-key-file", "--zone", "--data-dir", "--sign-token-file"}, []string{"--force"}},
		{[]string{"brand", "list", "--help"}, []string{"--data-dir", "--database-url", "--log-level"}, []string{"--api-addr", "--master-key-file", "--zone", "--dns-addr"}},
		{[]string{"brand", "create", "--help"}, []string{"--data-dir", "--master-key-file"}, []string{"--api-addr", "--zone", "--key-pool-size"}},
		{[]string{"maildomain", "add", "--help"}, []string{"--zone", "--database-url"}, []string{"--master-key-file", "--api-addr", "--force"}},
		{[]string{"maildomain", "remove", "--help"}, []string{"--zone", "--force"}, []string{"--master-key-file", "--api-addr"}},
		{[]string{"migrate", "--help"}, []string{"--database-url"}, []string{"--master-key-file", "--api-addr", "--zone"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			stdout, _, code := dkimd(t, nil, tc.args...)
			if code != 0 {
				t.Fatalf("exit %d", code)
			}
			for _, f := range tc.want {
				if !strings.Contains(stdout, "  "+f+" ") && !strings.Contains(stdout, "  "+f+"\n") {
					t.Errorf("help does not list %s:\n%s", f, stdout)
				}
			}
			for _, f := range tc.not {
				if strings.Contains(stdout, f) {
					t.Errorf("help lists %s, which this command does not read", f)
				}
			}
		})
	}
}

func TestExitCodes(t *testing.T) {
	dataDir := t.TempDir()
	prepareDataDir(t, dataDir)
	env := map[string]string{"DKIMD_DATA_DIR": dataDir}
	for _, tc := range []struct {
		args []string
		code int
	}{
		{nil, 2},
		{[]string{"frobnicate"}, 2},
		{[]string{"brand"}, 2},
		{[]string{"brand", "explode"}, 2},
		{[]string{"brand", "create"}, 2},
		{[]string{"brand", "create", "a", "b"}, 2},
		{[]string{"brand", "list", "--no-such-flag"}, 2},
		{[]string{"brand", "list", "--log-level", "loud"}, 2},
		{[]string{"brand", "list"}, 0},
		// serve's flags are accepted and ignored: one flag set serves all.
		{[]string{"brand", "list", "--api-addr", "127.0.0.1:1", "--zone", "x"}, 0},
		{[]string{"brand", "delete", "nope"}, 1},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, stderr, code := dkimd(t, env, tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tc.code, stderr)
			}
		})
	}
}

// TestErrorsAreOneHumanLine: the operator guide's examples, and no SQL or driver text
// unless --log-level debug asks for the detail.
func TestErrorsAreOneHumanLine(t *testing.T) {
	dataDir := t.TempDir()
	prepareDataDir(t, dataDir)
	env := map[string]string{"DKIMD_DATA_DIR": dataDir}

	_, stderr, code := dkimd(t, env, "brand", "list")
	if code != 0 || strings.TrimSpace(stderr) != "no brands" {
		t.Errorf("empty brand list: exit %d, stderr %q; want 0 and \"no brands\"", code, stderr)
	}
	if _, _, code := dkimd(t, env, "brand", "create", "acme"); code != 0 {
		t.Fatalf("brand create: exit %d", code)
	}
	_, stderr, code = dkimd(t, env, "maildomain", "list", "acme")
	if code != 0 || strings.TrimSpace(stderr) != "no maildomains for brand acme" {
		t.Errorf("empty maildomain list: exit %d, stderr %q", code, stderr)
	}
	if _, _, code := dkimd(t, env, "maildomain", "add", "acme", "spamtrap.dk"); code != 0 {
		t.Fatalf("maildomain add: exit %d", code)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"brand", "create", "acme"}, `dkimd: brand "acme" already exists`},
		{[]string{"brand", "rotate-secret", "nope"}, `dkimd: no such brand "nope"`},
		{[]string{"brand", "delete", "nope"}, `dkimd: no such brand "nope"`},
		{[]string{"maildomain", "add", "nope", "x.example"}, `dkimd: no such brand "nope"`},
		{[]string{"maildomain", "list", "nope"}, `dkimd: no such brand "nope"`},
		{[]string{"maildomain", "add", "acme", "spamtrap.dk"}, `dkimd: maildomain spamtrap.dk is already registered for brand acme`},
		{[]string{"maildomain", "remove", "acme", "other.dk"}, `dkimd: other.dk is not a maildomain of brand acme`},
		{[]string{"brand", "create", "Not_A_Brand"}, `dkimd: brand "Not_A_Brand": brand may hold only lower-case letters, digits and hyphens`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, stderr, code := dkimd(t, env, tc.args...)
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			if strings.TrimSpace(stderr) != tc.want {
				t.Errorf("stderr %q, want %q", stderr, tc.want)
			}
			checkHuman(t, stderr)
		})
	}
	t.Run("debug shows the cause", func(t *testing.T) {
		_, stderr, _ := dkimd(t, env, "brand", "create", "acme", "--log-level", "debug")
		if !strings.Contains(stderr, `"level":"DEBUG"`) || !strings.Contains(stderr, "conflict") {
			t.Errorf("debug log lacks the cause:\n%s", stderr)
		}
	})
}

// TestSubcommandsOpenOnlyWhatTheyUse: brand list reads no KEK (a broken
// one in the environment is not even looked at), and no subcommand but serve
// and migrate creates a store.
func TestSubcommandsOpenOnlyWhatTheyUse(t *testing.T) {
	dataDir := t.TempDir()
	prepareDataDir(t, dataDir)
	env := map[string]string{"DKIMD_DATA_DIR": dataDir, "DKIMD_MASTER_KEY_FILE": filepath.Join(t.TempDir(), "absent")}
	for _, args := range [][]string{{"brand", "list"}, {"maildomain", "list", "nope"}, {"brand", "rotate-secret", "nope"}} {
		if _, stderr, _ := dkimd(t, env, args...); strings.Contains(stderr, "key-encryption") {
			t.Errorf("%v looked at the KEK: %s", args, stderr)
		}
	}
	if _, stderr, code := dkimd(t, env, "brand", "create", "acme"); code != 1 || !strings.Contains(stderr, "--master-key-file") {
		t.Errorf("brand create with a missing KEK file: exit %d, %s", code, stderr)
	}

	fresh := filepath.Join(t.TempDir(), "fresh")
	_, stderr, code := dkimd(t, map[string]string{"DKIMD_DATA_DIR": fresh}, "brand", "list")
	if code != 1 || !strings.Contains(stderr, "dkimd serve") {
		t.Errorf("brand list on no store: exit %d, %s", code, stderr)
	}
	mustNotExist(t, fresh)
}

// TestCLINeverGeneratesAKEK is issue 16's first point: with only
// DKIMD_DATABASE_URL, a CLI call generated a KEK in the data dir and sealed
// the brand's fallback key under it. Now it is an error naming the flag and
// its environment twin, and nothing is written.
func TestCLINeverGeneratesAKEK(t *testing.T) {
	url := keystoretest.PostgresURL(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	env := map[string]string{"DKIMD_DATABASE_URL": url, "DKIMD_DATA_DIR": dataDir}
	if _, stderr, code := dkimd(t, env, "migrate"); code != 0 {
		t.Fatalf("migrate: %s", stderr)
	}
	_, stderr, code := dkimd(t, env, "brand", "create", "acme")
	if code != 1 || !strings.Contains(stderr, "--master-key-file") || !strings.Contains(stderr, "DKIMD_MASTER_KEY_FILE") {
		t.Fatalf("brand create on Postgres without a KEK: exit %d, stderr %q; want 1 naming --master-key-file and DKIMD_MASTER_KEY_FILE", code, stderr)
	}
	checkHuman(t, stderr)
	_, stderr, code = dkimd(t, env, "serve", "--api-addr", freeAddr(t), "--dns-addr", "", "--sign-addr", "", "--milter-addr", "", "--ops-addr", "")
	if code != 1 || !strings.Contains(stderr, "--master-key-file") {
		t.Fatalf("serve on Postgres without a KEK: exit %d, stderr %q", code, stderr)
	}
	mustNotExist(t, filepath.Join(dataDir, sealbox.KeyFileName))
	mustNotExist(t, filepath.Join(dataDir, "operator.token"))
	if _, _, code := dkimd(t, env, "brand", "list"); code != 0 {
		t.Fatal("brand list needs no KEK")
	}

	// A refused serve leaves a database it found empty empty: the KEK is
	// checked before anything is migrated.
	fresh := keystoretest.PostgresURL(t)
	freshEnv := map[string]string{"DKIMD_DATABASE_URL": fresh, "DKIMD_DATA_DIR": dataDir}
	if _, _, code := dkimd(t, freshEnv, "serve", "--api-addr", freeAddr(t), "--dns-addr", "", "--sign-addr", "", "--milter-addr", "", "--ops-addr", ""); code != 1 {
		t.Fatalf("serve on a fresh Postgres without a KEK: exit %d", code)
	}
	db, err := sql.Open("pgx", fresh)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var tables int
	if err := db.QueryRow(`SELECT COUNT(*) FROM pg_catalog.pg_tables WHERE schemaname = current_schema()`).Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if tables != 0 {
		t.Errorf("the refused serve created %d tables", tables)
	}

	// An embedded store: only serve generates, and only while the store
	// holds no sealed key.
	sqliteDir := t.TempDir()
	if _, _, code := dkimd(t, map[string]string{"DKIMD_DATA_DIR": sqliteDir}, "migrate"); code != 0 {
		t.Fatal("migrate")
	}
	_, stderr, code = dkimd(t, map[string]string{"DKIMD_DATA_DIR": sqliteDir}, "brand", "create", "acme")
	if code != 1 || !strings.Contains(stderr, "first dkimd serve") {
		t.Fatalf("brand create on a fresh embedded store: exit %d, stderr %q", code, stderr)
	}
	mustNotExist(t, sealbox.DefaultPath(sqliteDir))
}

// TestKEKMustOpenTheStore: the store's private keys name the KEKs that
// sealed them, and serve and the subcommands refuse a KEK file that lacks
// one, naming it; a file that adds a new sealing key above the old one (a
// KEK rotation) is accepted.
func TestKEKMustOpenTheStore(t *testing.T) {
	for _, dialect := range []string{keystore.SQLite, keystore.Postgres} {
		t.Run(dialect, func(t *testing.T) {
			keys := t.TempDir()
			first := writeKEK(t, keys)
			firstBox, err := sealbox.LoadFile(first)
			if err != nil {
				t.Fatal(err)
			}
			dataDir := t.TempDir()
			env := map[string]string{"DKIMD_DATA_DIR": dataDir, "DKIMD_MASTER_KEY_FILE": first}
			if dialect == keystore.Postgres {
				env["DKIMD_DATABASE_URL"] = keystoretest.PostgresURL(t)
			}
			if _, stderr, code := dkimd(t, env, "migrate"); code != 0 {
				t.Fatal(stderr)
			}
			// An empty store takes any KEK.
			if _, stderr, code := dkimd(t, env, "brand", "create", "acme"); code != 0 {
				t.Fatal(stderr)
			}

			other, err := os.MkdirTemp(keys, "other")
			if err != nil {
				t.Fatal(err)
			}
			env["DKIMD_MASTER_KEY_FILE"] = writeKEK(t, other)
			for _, args := range [][]string{
				{"brand", "create", "globex"},
				{"serve", "--api-addr", freeAddr(t), "--dns-addr", "", "--sign-addr", "", "--milter-addr", "", "--ops-addr", ""},
			} {
				_, stderr, code := dkimd(t, env, args...)
				if code != 1 || !strings.Contains(stderr, firstBox.CurrentID()) || !strings.Contains(stderr, "--master-key-file") {
					t.Errorf("%s with a foreign KEK: exit %d, stderr %q; want 1 naming %s", args[0], code, stderr, firstBox.CurrentID())
				}
				checkHuman(t, stderr)
			}
			if _, _, code := dkimd(t, env, "brand", "list"); code != 0 {
				t.Error("brand list reads no KEK, so a foreign one does not stop it")
			}

			// KEK rotation: a new first line seals, the old one still opens.
			rotated := filepath.Join(keys, "rotated")
			newer, err := os.ReadFile(env["DKIMD_MASTER_KEY_FILE"])
			if err != nil {
				t.Fatal(err)
			}
			older, err := os.ReadFile(first)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(rotated, append(newer, older...), 0o600); err != nil {
				t.Fatal(err)
			}
			env["DKIMD_MASTER_KEY_FILE"] = rotated
			if _, stderr, code := dkimd(t, env, "brand", "create", "globex"); code != 0 {
				t.Fatalf("brand create with a rotated KEK file: %s", stderr)
			}
			// Now the store uses both; the first file alone no longer opens it.
			env["DKIMD_MASTER_KEY_FILE"] = first
			if _, stderr, code := dkimd(t, env, "brand", "create", "initech"); code != 1 || !strings.Contains(stderr, "not ") {
				t.Errorf("the pre-rotation file after keys were sealed under the new KEK: exit %d, %s", code, stderr)
			}
		})
	}
}

// TestServeKeepsAMissingKEKMissing: an embedded store whose keys are sealed
// under a KEK that is gone must not get a fresh one (that would seal new
// keys that no backup of the old KEK opens, and leave the old ones dead).
func TestServeKeepsAMissingKEKMissing(t *testing.T) {
	dataDir := t.TempDir()
	env := map[string]string{"DKIMD_DATA_DIR": dataDir}
	prepareDataDir(t, dataDir)
	if _, stderr, code := dkimd(t, env, "brand", "create", "acme"); code != 0 {
		t.Fatal(stderr)
	}
	box, err := sealbox.LoadFile(sealbox.DefaultPath(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(sealbox.DefaultPath(dataDir)); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := dkimd(t, env, "serve", "--api-addr", freeAddr(t), "--dns-addr", "", "--sign-addr", "", "--milter-addr", "", "--ops-addr", "")
	if code != 1 || !strings.Contains(stderr, box.CurrentID()) || !strings.Contains(stderr, "backup") {
		t.Fatalf("serve with the KEK gone: exit %d, stderr %q", code, stderr)
	}
	mustNotExist(t, sealbox.DefaultPath(dataDir))
}

// TestServeChecksPortsBeforeGenerating: a taken port stops serve before it
// creates the data dir, a KEK or an operator token.
func TestServeChecksPortsBeforeGenerating(t *testing.T) {
	taken := freeAddr(t)
	ln, err := net.Listen("tcp", taken)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dataDir := filepath.Join(t.TempDir(), "data")
	for _, flagName := range []string{"--api-addr", "--ops-addr", "--sign-addr", "--dns-addr"} {
		t.Run(flagName, func(t *testing.T) {
			args := []string{"serve", "--data-dir", dataDir, "--api-addr", freeAddr(t), "--dns-addr", "", "--sign-addr", "",
				"--milter-addr", "", "--ops-addr", "", flagName, taken}
			_, stderr, code := dkimd(t, nil, args...)
			if code != 1 || !strings.Contains(stderr, flagName) {
				t.Fatalf("exit %d, stderr %q; want 1 naming %s", code, stderr, flagName)
			}
			mustNotExist(t, dataDir)
		})
	}
}

// TestOneServePerDataDir: a second serve on the same embedded store is
// refused naming the PID of the first, while the CLI keeps working beside
// it; once the first stops, a new serve starts.
func TestOneServePerDataDir(t *testing.T) {
	c := cliEnv{t: t, dataDir: t.TempDir()}
	prepareDataDir(t, c.dataDir)
	serveArgs := func() []string {
		return []string{"serve", "--data-dir", c.dataDir, "--api-addr", freeAddr(t), "--dns-addr", "", "--sign-addr", "",
			"--milter-addr", "", "--ops-addr", "", "--key-pool-size", "0", "--resolver", "127.0.0.1:9"}
	}
	ctx, stop := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() { first <- run(ctx, serveArgs(), noEnv, &bytes.Buffer{}, &bytes.Buffer{}) }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			stop()
			<-first
		}
	})
	lockPath := filepath.Join(c.dataDir, lockFileName)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if b, err := os.ReadFile(lockPath); err == nil && len(b) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first serve never took the lock")
		}
	}

	_, stderr, code := dkimd(t, nil, serveArgs()...)
	if code != 1 || !strings.Contains(stderr, "PID "+strconv.Itoa(os.Getpid())) {
		t.Fatalf("second serve: exit %d, stderr %q; want 1 naming PID %d", code, stderr, os.Getpid())
	}
	if _, stderr, err := c.run("brand", "create", "acme"); err != nil {
		t.Fatalf("brand create beside serve: %v %s", err, stderr)
	}
	if out, stderr, err := c.run("brand", "list"); err != nil || !strings.HasPrefix(out, "acme\t") {
		t.Fatalf("brand list beside serve: %q %v %s", out, err, stderr)
	}

	stop()
	stopped = true
	if err := <-first; err != nil {
		t.Fatalf("first serve: %v", err)
	}
	args := serveArgs()
	api := args[4]
	again := runServe(t, args, noEnv, &bytes.Buffer{})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if ended, err := again.ended(); ended {
			t.Fatalf("serve after the first stopped: %v", err)
		}
		if conn, err := net.Dial("tcp", api); err == nil {
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("serve after the first stopped never listened")
		}
	}
}

// TestMaildomainRemoveWithKeys: refused, naming the selectors, while the
// domain holds keys; --force deletes them as DELETE does, and the audit log
// says the CLI did both.
func TestMaildomainRemoveWithKeys(t *testing.T) {
	c := cliEnv{t: t, dataDir: t.TempDir()}
	if _, stderr, err := c.run("brand", "create", "acme"); err != nil {
		t.Fatal(stderr)
	}
	if _, stderr, err := c.run("maildomain", "add", "acme", "spamtrap.dk"); err != nil {
		t.Fatal(stderr)
	}
	store, err := keystore.OpenSQLite(c.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	box, err := sealbox.LoadFile(sealbox.DefaultPath(c.dataDir))
	if err != nil {
		t.Fatal(err)
	}
	gen, err := provisiontest.NewGenerator()
	if err != nil {
		t.Fatal(err)
	}
	svc := &provision.Service{Store: store, Box: box, Keys: gen, Zone: "oxcloud.zone", Now: time.Now}
	if _, _, _, err := svc.CreateDomain(t.Context(), "acme", "spamtrap.dk", provision.DomainOptions{}, provision.Actor{Name: "brand:acme"}); err != nil {
		t.Fatal(err)
	}

	env := map[string]string{"DKIMD_DATA_DIR": c.dataDir}
	_, stderr, code := dkimd(t, env, "maildomain", "remove", "acme", "spamtrap.dk")
	if code != 1 || !strings.Contains(stderr, "selector1, selector2") || !strings.Contains(stderr, "--force") {
		t.Fatalf("remove with keys: exit %d, stderr %q; want 1 naming selector1, selector2", code, stderr)
	}
	if ok, err := store.IsMaildomain(t.Context(), "acme", "spamtrap.dk"); err != nil || !ok {
		t.Fatalf("the refused remove removed the maildomain: %v %v", ok, err)
	}

	if _, stderr, code := dkimd(t, env, "maildomain", "remove", "--force", "acme", "spamtrap.dk"); code != 0 {
		t.Fatalf("remove --force: exit %d, %s", code, stderr)
	}
	if _, err := store.Domain(t.Context(), "spamtrap.dk"); !errors.Is(err, keystore.ErrNotFound) {
		t.Errorf("domain after remove --force: %v, want not found", err)
	}
	if keys, err := store.Keys(t.Context(), keystore.OwnerDomain, "spamtrap.dk"); err != nil || len(keys) != 0 {
		t.Errorf("keys after remove --force: %d, %v", len(keys), err)
	}
	if ok, err := store.IsMaildomain(t.Context(), "acme", "spamtrap.dk"); err != nil || ok {
		t.Errorf("maildomain after remove --force: %v %v", ok, err)
	}
	recs, err := store.Audit(t.Context(), keystore.AuditFilter{Domain: "spamtrap.dk", Limit: 20})
	if err != nil {
		t.Fatal(err)
	}
	byAction := map[string]string{}
	for _, r := range recs {
		byAction[r.Action] = r.Actor
	}
	for _, action := range []string{"domain.delete", "key.destroy", "maildomain.remove"} {
		if byAction[action] != "cli" {
			t.Errorf("audit %s by %q, want cli (records %+v)", action, byAction[action], byAction)
		}
	}
}

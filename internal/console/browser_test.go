package console_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"dkimd/internal/keystore"
	"dkimd/internal/provision"
)

// bulkCount is how many maildomains the bulk onboarding test creates.
const bulkCount = 200

// TestConsoleInBrowser drives the console in headless Chromium as a brand's
// staff would: every control is found by its role and accessible name (the
// names of docs/brand-guide.md's console section, which outside tests rely on), every click is a mouse click, and
// every change goes through the brand API to the real store.
func TestConsoleInBrowser(t *testing.T) {
	st := newStack(t, stackOptions{})
	var bulk []string
	for i := range bulkCount {
		bulk = append(bulk, fmt.Sprintf("bulk%03d.example", i))
	}
	st.brand("acme", append([]string{"shop.example", "mail.example", "nodots-are-fine.example", "x.y.example"}, bulk...)...)
	st.brand("beta", "beta.example", "x-y.example")
	ctx := context.Background()
	for _, d := range []struct{ brand, domain string }{{"beta", "beta.example"}, {"beta", "x-y.example"}, {"acme", "mail.example"}} {
		if _, _, _, err := st.svc.CreateDomain(ctx, d.brand, d.domain, provision.DomainOptions{}, provision.Actor{Name: "brand:" + d.brand}); err != nil {
			t.Fatal(err)
		}
	}
	b := newTab(t, st.srv.URL)

	t.Run("wrong secret", func(t *testing.T) {
		b := b.on(t)
		b.do("open the console", chromedp.Navigate(st.srv.URL+"/console/"))
		b.screenshot("signin", false)
		b.typeInto("textbox", "Brand", "acme")
		b.typeInto("textbox", "Secret", "not-the-secret")
		b.click("button", "Sign in", 0)
		b.waitFor("the error", `document.getElementById('signin-error').innerText !== ''`)
		if got := b.text("#signin-error"); got != "missing or bad credentials" {
			t.Errorf("sign-in error %q, want the API's title", got)
		}
		if eval[bool](b, `!document.getElementById('signout').hidden`) {
			t.Error("signed in with a wrong secret")
		}
	})

	t.Run("sign in with the keyboard", func(t *testing.T) {
		b := b.on(t)
		b.clearField("textbox", "Secret")
		b.typeInto("textbox", "Secret", st.secrets["acme"]+"\r") // Enter submits
		b.see("button", "Sign out")
		b.see("heading", "Domains")
		cookies, err := chromedp.Call(b.ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{st.srv.URL}})
		if err != nil {
			t.Fatal(err)
		}
		if len(cookies.Cookies) != 1 {
			t.Fatalf("cookies %+v", cookies.Cookies)
		}
		c := cookies.Cookies[0]
		if c.Name != "dkimd_console" || !c.HTTPOnly || c.SameSite != network.CookieSameSiteStrict || c.Session || c.Secure {
			t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict, expiring, not Secure over plain HTTP", c)
		}
		if eval[bool](b, `document.cookie.includes('dkimd_console')`) {
			t.Error("the page's script can read the session cookie")
		}
	})

	t.Run("list and generate keys", func(t *testing.T) {
		b := b.on(t)
		b.waitFor("the list", `document.querySelector('#domains-table tbody tr') !== null`)
		contains(t, "the domain list", b.text("#domains-table"), "mail.example\tpending-dns\tselector1\tRSA 2048")
		if strings.Contains(b.text("#view-domains"), "beta.example") {
			t.Error("acme's list shows beta's domain")
		}
		// shop.example is not on the first page of maildomains without
		// keys: Search finds it.
		b.typeInto("searchbox", "Search", "shop")
		b.waitFor("the search", `document.getElementById('pending-list').innerText.startsWith('shop.example')`)
		if n := eval[int](b, `document.querySelectorAll('#pending-list li').length`); n != 1 {
			t.Errorf("search for shop shows %d maildomains", n)
		}
		b.click("button", "Generate keys", 0)
		b.see("link", "shop.example")
		contains(t, "the list after generating keys", b.text("#domains-table"), "shop.example\tpending-dns\tselector1\tRSA 2048")
	})

	var names, targets []string
	t.Run("domain page and copying", func(t *testing.T) {
		b := b.on(t)
		b.click("link", "shop.example", 0)
		b.see("heading", "shop.example")
		b.waitFor("the records", `document.querySelectorAll('#records-table tbody tr').length === 2`)
		records := b.text("#records-table")
		for _, sel := range []string{"selector1", "selector2"} {
			names = append(names, sel+"._domainkey.shop.example")
			targets = append(targets, sel+"-shop-example._domainkey."+testZone)
		}
		contains(t, "the records", records, append(names, targets...)...)
		// Name and target of each selector have a Copy button each, in
		// the order of the table.
		b.click("button", "Copy", 0)
		if got := b.clipboard(); got != names[0] {
			t.Errorf("Copy put %q on the clipboard, want %q", got, names[0])
		}
		b.click("button", "Copy", 3)
		if got := b.clipboard(); got != targets[1] {
			t.Errorf("Copy put %q on the clipboard, want %q", got, targets[1])
		}
		b.click("button", "Copy all", 0)
		want := fmt.Sprintf("%s. 3600 IN CNAME %s.\n%s. 3600 IN CNAME %s.\n", names[0], targets[0], names[1], targets[1])
		if got := b.clipboard(); got != want {
			t.Errorf("Copy all put %q on the clipboard, want %q", got, want)
		}
	})

	t.Run("missing turns ok", func(t *testing.T) {
		b := b.on(t)
		b.waitFor("the first check", `document.querySelectorAll('#dns-table .verdict').length === 2`)
		row := b.text(`#dns-table tr[data-selector="selector1"]`)
		contains(t, "selector1's verdict", row, "missing", names[0]+"\nCNAME → "+targets[0], "no record", "Create a CNAME")
		st.dns.publish("shop.example") // the customer creates the CNAMEs
		b.click("button", "Check DNS now", 0)
		b.waitFor("ok verdicts", `[...document.querySelectorAll('#dns-table .verdict')].every(v => v.innerText === 'ok')`)
		contains(t, "selector1's verdict", b.text(`#dns-table tr[data-selector="selector1"]`), "CNAME → "+targets[0])
		// The live check moves the domain to active at once, and the page
		// shows it.
		b.waitFor("the status", `document.getElementById('domain-status').innerText === 'active'`)
		b.screenshot("domain", true)
	})

	t.Run("rotate", func(t *testing.T) {
		b := b.on(t)
		b.click("button", "Rotate", 0)
		b.waitFor("the pending switch", `document.getElementById('rotation-facts').innerText.includes('selector2 signs from')`)
		b.waitFor("the history", `document.getElementById('history-table').innerText.includes('rotation requested')`)
		contains(t, "the history", b.text("#history-table"), "domain created", "key created", "brand:acme")
		// A second normal rotation is refused by the API; its title shows.
		b.click("button", "Rotate", 0)
		b.waitFor("the refusal", `document.getElementById('action-error').innerText !== ''`)
		if got := b.text("#action-error"); got != "a rotation is already pending" {
			t.Errorf("second rotate shows %q", got)
		}
	})

	t.Run("emergency rotate after typing the domain", func(t *testing.T) {
		b := b.on(t)
		b.click("button", "Emergency rotate", 0)
		b.see("dialog", "Emergency rotate shop.example?")
		b.typeInto("textbox", "Type shop.example to confirm", "shop.exampel")
		if eval[bool](b, `!document.getElementById('confirm-ok').disabled`) {
			t.Error("a mistyped domain enables the confirmation")
		}
		b.clearField("textbox", "Type shop.example to confirm")
		b.typeInto("textbox", "Type shop.example to confirm", "shop.example")
		b.click("button", "Emergency rotate", 0) // the dialog's: the page's own is hidden meanwhile
		b.waitFor("the switch", `document.getElementById('rotation-facts').innerText.includes('Signing selector\nselector2')`)
		contains(t, "the keys", b.text("#keys-table"), "selector1\trevoked")
	})

	t.Run("delete after typing the domain", func(t *testing.T) {
		b := b.on(t)
		b.click("button", "Delete", 0)
		b.typeInto("textbox", "Type shop.example to confirm", "shop.example")
		b.click("button", "Delete", 0)
		b.see("heading", "Domains")
		b.waitFor("the message", `document.getElementById('domains-flash').innerText.includes('shop.example deleted')`)
		if _, err := st.store.Domain(ctx, "shop.example"); !errors.Is(err, keystore.ErrNotFound) {
			t.Errorf("shop.example still in the store: %v", err)
		}
	})

	t.Run("another brand's domain", func(t *testing.T) {
		b := b.on(t)
		b.do("open beta's domain", chromedp.Navigate(st.srv.URL+"/console/#/domains/beta.example"))
		b.waitFor("the error", `document.getElementById('domain-error').innerText !== ''`)
		if got := b.text("#domain-error"); got != "domain not found" {
			t.Errorf("beta's domain page shows %q", got)
		}
		if page := b.pageText(); strings.Contains(page, "beta-example") || strings.Contains(page, "selector1._domainkey.beta.example") {
			t.Errorf("beta's records are visible to acme:\n%s", page)
		}
		// The API itself refuses acme's session on beta's paths.
		got := eval[string](b, `fetch('/cloudapi/v2/mail/dkim/beta/beta.example').then(r => r.json()).then(j => j.errors[0].status + ' ' + j.errors[0].title)`)
		if got != "403 these credentials do not give access to this brand" {
			t.Errorf("acme's session on beta's domain: %s", got)
		}
		// And a change without the CSRF token, as another site would send it.
		got = eval[string](b, `fetch('/cloudapi/v2/mail/dkim/acme/bulk000.example', {method: 'PUT'}).then(r => r.json()).then(j => j.errors[0].code)`)
		if got != "CSRF_TOKEN_INVALID" {
			t.Errorf("a PUT without the CSRF token: %s", got)
		}
	})

	t.Run("bulk onboarding", func(t *testing.T) {
		b := b.on(t)
		b.click("link", "Bulk onboarding", 0)
		b.see("heading", "Bulk onboarding")
		// The odd lines first, so that the screenshot shows their results.
		lines := []string{"domain,notes"}
		lines = append(lines,
			"mail.example,already has keys",   // exists
			"beta.example",                    // beta holds it
			"stranger.example",                // nobody's maildomain
			"x.y.example",                     // label x-y-example is beta's
			"not a domain",                    // invalid
			"nodots",                          // invalid (the API says why)
			"bulk000.example",                 // again below: skipped there
			"\"nodots-are-fine.example\",csv", // created
		)
		lines = append(lines, bulk...)
		b.do("paste the list", chromedp.SetValue("domains", strings.Join(lines, "\n"), role("textbox", "Domains", 0)))
		b.click("button", "Generate keys for all", 0)
		b.see("progressbar", "")
		b.waitLong("100%", `document.querySelector('[role=progressbar]').getAttribute('aria-valuenow') === '100'`)
		b.see("link", "Download CSV")
		b.see("link", "Download zone snippet")
		results := strings.Split(b.text("#bulk-results"), "\n")
		if len(results) != bulkCount+7 {
			t.Fatalf("%d result lines, want %d", len(results), bulkCount+7)
		}
		want := map[string]string{
			"bulk000.example": "created", "bulk199.example": "created", "mail.example": "exists",
			"beta.example":            "label taken (domain is held by another brand)",
			"stranger.example":        "not a maildomain (domain is not a maildomain of this brand)",
			"x.y.example":             "label taken (", // the API's title
			"not a domain":            "invalid (not a domain name)",
			"nodots":                  "invalid (",
			"nodots-are-fine.example": "created",
		}
		seen := map[string]bool{}
		for _, line := range results {
			for d, r := range want {
				if strings.HasPrefix(line, d+" ") {
					seen[d] = true
					if !strings.HasPrefix(line, d+" "+r) || r == "created" && line != d+" created" {
						t.Errorf("result %q, want %s", line, r)
					}
				}
			}
		}
		if len(seen) != len(want) {
			t.Errorf("results seen for %v of %v", seen, want)
		}
		n, err := st.store.CountDomains(ctx, "acme")
		if err != nil || n != bulkCount+2 {
			t.Errorf("acme holds %d domains (%v), want %d", n, err, bulkCount+2)
		}
		eval[chromedp.Void](b, `window.scrollTo(0, document.getElementById('bulk-go').getBoundingClientRect().top + window.scrollY - 16)`)
		b.screenshot("bulk", false)
		name, csv := b.download("Download CSV")
		if name != "dkim-cnames.csv" {
			t.Errorf("CSV saved as %q", name)
		}
		csvLines := strings.Split(strings.TrimSpace(csv), "\r\n")
		if len(csvLines) != 1+2*(bulkCount+2) || csvLines[0] != "domain,selector,name,type,target" ||
			!strings.Contains(csv, "bulk042.example,selector2,selector2._domainkey.bulk042.example,CNAME,selector2-bulk042-example._domainkey."+testZone+"\r\n") {
			t.Errorf("CSV of %d lines:\n%.400s", len(csvLines), csv)
		}
		// A file can be read into the list instead of pasting.
		file := filepath.Join(t.TempDir(), "domains.csv")
		if err := os.WriteFile(file, []byte("domain\nfrom-a-file.example\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		b.do("choose a file", chromedp.SetUploadFiles(chromedp.ID("bulk-file"), []string{file}))
		b.waitFor("the file's text", `document.getElementById('bulk-domains').value === 'domain\nfrom-a-file.example\n'`)
		name, zone := b.download("Download zone snippet")
		if name != "dkim-cnames.zone" {
			t.Errorf("zone snippet saved as %q", name)
		}
		if n := strings.Count(zone, " IN CNAME "); n != 2*(bulkCount+2) ||
			!strings.Contains(zone, "selector1._domainkey.bulk199.example. 3600 IN CNAME selector1-bulk199-example._domainkey."+testZone+".\n") {
			t.Errorf("zone snippet with %d CNAMEs:\n%.400s", n, zone)
		}
	})

	t.Run("pages of the list", func(t *testing.T) {
		b := b.on(t)
		b.click("link", "Domains", 0)
		b.clearField("searchbox", "Search")
		b.waitFor("a full page", `document.querySelectorAll('#domains-table tbody tr').length === 100`)
		b.screenshot("domains", false)
		b.click("button", "Next page", 0)
		b.waitFor("the second page", `document.querySelector('#domains-table tbody a').innerText === 'bulk100.example'`)
		b.click("button", "Next page", 0)
		b.waitFor("the last page", `document.querySelectorAll('#domains-table tbody tr').length === 2`)
		if eval[bool](b, `!document.getElementById('page-next').hidden`) {
			t.Error("the last page offers a next page")
		}
	})

	t.Run("phone", func(t *testing.T) {
		b := b.on(t)
		b.do("phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2)),
			chromedp.Navigate(st.srv.URL+"/console/#/domains/mail.example"))
		b.see("heading", "mail.example")
		b.waitFor("the check", `document.querySelectorAll('#dns-table .verdict').length === 2`)
		// Nothing is wider than the screen: no sideways scrolling.
		if w := eval[int](b, `document.documentElement.scrollWidth`); w > 390 {
			t.Errorf("page is %d px wide on a 390 px screen", w)
		}
		b.screenshot("phone", false)
		b.do("desktop viewport", chromedp.ResetViewport())
	})

	t.Run("sign out", func(t *testing.T) {
		b := b.on(t)
		b.click("button", "Sign out", 0)
		b.see("textbox", "Brand")
		cookies, err := chromedp.Call(b.ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{st.srv.URL}})
		if err != nil || len(cookies.Cookies) != 0 {
			t.Errorf("cookies after sign-out: %+v, %v", cookies.Cookies, err)
		}
		if got := eval[int](b, `fetch('/cloudapi/v2/mail/dkim/acme', {headers: {'X-CSRF-Token': 'x'}}).then(r => r.status)`); got != 401 {
			t.Errorf("the API after sign-out: %d", got)
		}
	})
}

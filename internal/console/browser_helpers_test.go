package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/accessibility"
	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/dom"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// stepTimeout bounds one browser step; a step that waits longer has failed.
const stepTimeout = 20 * time.Second

// chromium is the browser binary: Debian's chromium, which .ci/run installs.
// Without it the browser tests skip, except under CI, where they must run.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed, and CI is set: .ci/run installs it (apt-get install chromium)")
	}
	t.Skip("chromium is not installed (apt-get install chromium); the console's browser tests need it")
	return ""
}

// tab is one headless Chromium tab on the console.
type tab struct {
	t    *testing.T
	ctx  context.Context
	base string // the server's origin
}

func newTab(t *testing.T, base string) *tab {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)), chromedp.WindowSize(1280, 900),
		chromedp.Flag("lang", "en-US"), chromedp.UserDataDir(t.TempDir()))
	if os.Geteuid() == 0 {
		// Chromium's sandbox refuses to run as root (containers, CI).
		opts = append(opts, chromedp.NoSandbox)
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelCtx()
		cancelAlloc()
	})
	// The first call starts the browser; it gets no timeout, since it
	// binds the browser's life to its context.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	// The real clipboard, as a user who clicked "Allow" has it.
	for _, name := range []string{"clipboard-read", "clipboard-write"} {
		_, err := chromedp.CallBrowser(ctx, browser.SetPermission, browser.SetPermissionParams{
			Permission: &browser.PermissionDescriptor{Name: name, AllowWithoutSanitization: true},
			Setting:    browser.PermissionSettingGranted, Origin: base,
		})
		if err != nil {
			t.Fatalf("grant %s: %v", name, err)
		}
	}
	return &tab{t: t, ctx: ctx, base: base}
}

// on is the tab for the (sub)test t, so that a failure ends t, not its
// parent.
func (b *tab) on(t *testing.T) *tab {
	c := *b
	c.t = t
	return &c
}

// do runs steps within stepTimeout; on failure it shows what the page said.
func (b *tab) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v\npage text:\n%s", what, err, b.pageText())
	}
}

// eval evaluates a JavaScript expression (awaiting a promise) into T.
func eval[T any](b *tab, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v\npage text:\n%s", expr, err, b.pageText())
	}
	return v
}

// waitFor waits until a JavaScript condition holds.
func (b *tab) waitFor(what, cond string) {
	b.t.Helper()
	b.do(what, chromedp.Poll[chromedp.Void](cond, chromedp.WithPollingTimeout(stepTimeout-time.Second),
		chromedp.WithPollingInterval(50*time.Millisecond)))
}

// waitLong is waitFor for the one step whose length grows with the
// machine's load, 200 PUTs, with a deadline far beyond what it needs.
func (b *tab) waitLong(what, cond string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 3*time.Minute)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](cond, chromedp.WithPollingTimeout(0),
		chromedp.WithPollingInterval(100*time.Millisecond)))
	if err != nil {
		b.t.Fatalf("%s: %v\npage text:\n%s", what, err, b.pageText())
	}
}

func (b *tab) pageText() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	if err != nil {
		return fmt.Sprintf("(unreadable: %v)", err)
	}
	return s
}

// role finds elements the way assistive technology and outside browser
// tests do: by their computed role and accessible name in Chromium's
// accessibility tree. Hidden elements are not in it. nth picks one of
// several matches (0 is the first, in document order).
func role(r, name string, nth int) chromedp.QueryOption {
	return chromedp.ByFunc(func(ctx context.Context, t *chromedp.Target, n *chromedp.Node) ([]cdp.NodeID, error) {
		res, err := cdp.Call(ctx, t, accessibility.QueryAXTree, accessibility.QueryAXTreeParams{
			NodeID: n.NodeID, Role: r, AccessibleName: name,
		})
		if err != nil {
			return nil, err
		}
		var ids []cdp.BackendNodeID
		for _, ax := range res.Nodes {
			if !ax.Ignored && ax.BackendDOMNodeID != 0 {
				ids = append(ids, ax.BackendDOMNodeID)
			}
		}
		if len(ids) <= nth {
			return nil, nil // not there yet: the query waits
		}
		pushed, err := cdp.Call(ctx, t, dom.PushNodesByBackendIDsToFrontend, dom.PushNodesByBackendIDsToFrontendParams{
			BackendNodeIDs: ids[nth : nth+1],
		})
		return pushed.NodeIDs, err
	})
}

func label(r, name string, nth int) string { return fmt.Sprintf("%s %q #%d", r, name, nth) }

// click clicks the nth element with role r and accessible name name, with
// the mouse, once it is visible and enabled.
func (b *tab) click(r, name string, nth int) {
	b.t.Helper()
	b.do("click "+label(r, name, nth),
		chromedp.WaitEnabled(label(r, name, nth), role(r, name, nth)),
		chromedp.Click(label(r, name, nth), role(r, name, nth), chromedp.NodeVisible))
}

// see waits until an element with role r and name name is shown.
func (b *tab) see(r, name string) {
	b.t.Helper()
	b.do("see "+label(r, name, 0), chromedp.WaitVisible(label(r, name, 0), role(r, name, 0)))
}

// typeInto focuses the field labelled name and types text, key by key.
func (b *tab) typeInto(r, name, text string) {
	b.t.Helper()
	b.do("type into "+label(r, name, 0), chromedp.SendKeys(label(r, name, 0), text, role(r, name, 0), chromedp.NodeVisible))
}

// clearField empties the field as a user does: select all, then delete.
func (b *tab) clearField(r, name string) {
	b.t.Helper()
	b.do("clear "+label(r, name, 0),
		chromedp.Focus(label(r, name, 0), role(r, name, 0)),
		chromedp.KeyEvent("a", chromedp.KeyModifiers(chromedp.ModifierCtrl)),
		chromedp.KeyEvent(kb.Backspace))
}

// download clicks the link named name and returns the file the browser
// saved, with the name it suggested.
func (b *tab) download(name string) (filename, content string) {
	b.t.Helper()
	dir := b.t.TempDir()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	_, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: dir, EventsEnabled: new(true),
	})
	if err != nil {
		b.t.Fatal(err)
	}
	begins := chromedp.BrowserEvents(ctx, browser.DownloadWillBegin)
	progress := chromedp.BrowserEvents(ctx, browser.DownloadProgress)
	b.click("link", name, 0)
	var guid string
	for ev, err := range begins {
		if err != nil {
			b.t.Fatalf("download %s: %v", name, err)
		}
		guid, filename = ev.GUID, ev.SuggestedFilename
		break
	}
	for ev, err := range progress {
		if err != nil {
			b.t.Fatalf("download %s: %v", name, err)
		}
		if ev.GUID == guid && ev.State == browser.DownloadProgressStateCompleted {
			break
		}
		if ev.GUID == guid && ev.State == browser.DownloadProgressStateCanceled {
			b.t.Fatalf("download %s canceled", name)
		}
	}
	body, err := os.ReadFile(filepath.Join(dir, guid))
	if err != nil {
		b.t.Fatal(err)
	}
	return filename, string(body)
}

// clipboard is what the system clipboard holds.
func (b *tab) clipboard() string {
	b.t.Helper()
	return eval[string](b, `navigator.clipboard.readText()`)
}

// text is the innerText of the element that a CSS selector finds.
func (b *tab) text(css string) string {
	b.t.Helper()
	return eval[string](b, fmt.Sprintf(`(document.querySelector(%s) || {innerText: ""}).innerText`, jsString(css)))
}

func jsString(s string) string {
	j, _ := json.Marshal(s)
	return string(j)
}

// screenshot saves the page as docs/console/<name>.png when
// DKIMD_CONSOLE_SCREENSHOTS names a directory (`make console-screenshots`).
func (b *tab) screenshot(name string, full bool) {
	b.t.Helper()
	dir := os.Getenv("DKIMD_CONSOLE_SCREENSHOTS")
	if dir == "" {
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	shot := chromedp.CaptureScreenshot()
	if full {
		shot = chromedp.FullScreenshot(100)
	}
	png, err := chromedp.Run(ctx, shot)
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// contains fails unless s holds every one of want.
func contains(t *testing.T, what, s string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(s, w) {
			t.Errorf("%s does not show %q:\n%s", what, w, s)
		}
	}
}

# Screenshots of the brand console for docs/console/ (and the brand guide),
# taken by its browser test in headless Chromium.
.PHONY: console-screenshots
console-screenshots:
	DKIMD_CONSOLE_SCREENSHOTS=$(CURDIR)/docs/console $(GO) test -count=1 -run TestConsoleInBrowser ./internal/console/

//go:build race

package deploy_test

// raceEnabled: the test binary was built with -race, so dkimd is built with
// -race too. That reuses the race-instrumented packages the test build just
// compiled (instead of compiling modernc.org/sqlite a second time) and runs
// the real server under the race detector.
const raceEnabled = true

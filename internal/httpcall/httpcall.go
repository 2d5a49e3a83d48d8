// Package httpcall is test support: one HTTP request made and its body read,
// failing the test on a transport error, for tests that talk to a real
// listener.
package httpcall

import (
	"io"
	"net/http"
	"testing"
)

// Do sends req with the default client and returns the response with its
// body read and closed.
func Do(t testing.TB, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

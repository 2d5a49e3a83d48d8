package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
)

// FuzzDecodeBody feeds arbitrary bodies to the request decoder of PUT and
// the admin calls: it either refuses them with a 4xx problem whose title
// does not echo the body, or yields a value that survives a JSON round trip.
func FuzzDecodeBody(f *testing.F) {
	for _, s := range []string{``, `{}`, `{"keyBits":2048}`, `{"keyBits":4096,"ed25519":true}`, `{"keyBits":"x"}`,
		`{"extra":1}`, `{} {}`, `[`, `{"keyBits":1e400}`, "\x00", `{"ed25519":null}`} {
		f.Add([]byte(s), "application/json")
	}
	f.Add([]byte(`{}`), "text/plain")
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		r := httptest.NewRequest(http.MethodPut, "/x", bytes.NewReader(body))
		r.Header.Set("Content-Type", contentType)
		var v putBody
		err := decodeBody(httptest.NewRecorder(), r, &v, true)
		if err != nil {
			p := toProblem(err)
			if p.status < 400 || p.status >= 500 {
				t.Fatalf("body %q: status %d for a client's mistake", body, p.status)
			}
			// Short bodies can match a fixed title by chance ("applicati");
			// a title that quotes a body of 24 bytes or more is an echo.
			if len(body) >= 24 && bytes.Contains([]byte(p.title), body) {
				t.Fatalf("problem title echoes the body: %q", p.title)
			}
			return
		}
		out, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		var back putBody
		if err := json.Unmarshal(out, &back); err != nil || !reflect.DeepEqual(back, v) {
			t.Fatalf("round trip of %+v: %+v, %v", v, back, err)
		}
	})
}

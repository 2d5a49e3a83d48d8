package reqlog

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRequestID(t *testing.T) {
	for _, tc := range []struct {
		in   string
		keep bool
	}{
		{"abc-123_X.y:z", true},
		{"", false},
		{"has space", false},
		{"new\nline", false},
		{strings.Repeat("a", 129), false},
		{strings.Repeat("a", 128), true},
	} {
		got := RequestID(tc.in)
		if (got == tc.in) != tc.keep {
			t.Errorf("RequestID(%q) = %q, keep %v", tc.in, got, tc.keep)
		}
		if !tc.keep && (len(got) != 32 || !plain(got)) {
			t.Errorf("generated id %q", got)
		}
	}
}

func TestStatusWriter(t *testing.T) {
	rec := httptest.NewRecorder()
	w := &StatusWriter{ResponseWriter: rec}
	if _, err := w.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	w.WriteHeader(http.StatusTeapot) // too late: the first status stands
	if w.Status != http.StatusOK {
		t.Fatalf("Status = %d", w.Status)
	}
}

package sealbox

import (
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLooseModeMessageNamesWhoIsLetIn: a 0640 file is open to its group,
// and the message must not blame "others".
func TestLooseModeMessageNamesWhoIsLetIn(t *testing.T) {
	for _, tc := range []struct {
		mode    os.FileMode
		want    string
		notWant string
	}{
		{0o640, "readable by its group (mode 0640)", "others"},
		{0o604, "readable by others (mode 0604)", "group"},
		{0o644, "readable by its group and others (mode 0644)", ""},
		{0o620, "writable by its group (mode 0620)", "others"},
		{0o666, "readable and writable by its group and others (mode 0666)", ""},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "kek")
			if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(make([]byte, 32))), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			_, err := LoadFile(path)
			if err == nil {
				t.Fatalf("mode %#o accepted", tc.mode)
			}
			if !strings.Contains(err.Error(), tc.want) || (tc.notWant != "" && strings.Contains(err.Error(), tc.notWant)) {
				t.Fatalf("error %q: want %q, not %q", err, tc.want, tc.notWant)
			}
		})
	}
}

// TestGenerateNeverReplaces: a second Generate on the same path fails with
// fs.ErrExist and leaves the first key in place.
func TestGenerateNeverReplaces(t *testing.T) {
	path := filepath.Join(t.TempDir(), KeyFileName)
	box, err := Generate(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Generate(path); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second Generate: %v, want fs.ErrExist", err)
	}
	again, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if again.CurrentID() != box.CurrentID() || !again.Holds(box.CurrentID()) || len(again.IDs()) != 1 {
		t.Fatalf("reloaded %q, want the first key %q", again.IDs(), box.CurrentID())
	}
}

package desktopentry

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
)

func TestIndex(t *testing.T) {
	idx := New()
	idx.AddDir(fstest.MapFS{
		"firefox-esr.desktop": {Data: []byte("[Desktop Entry]\nType=Application\nName=Firefox ESR\nName[de]=Firefox\n" +
			"Icon=firefox-esr\nExec=/usr/lib/firefox-esr/firefox-esr %u\n[Desktop Action new]\nName=New\nExec=other\n")},
		"kde/konsole.desktop": {Data: []byte("[Desktop Entry]\nType=Application\nName=Konsole\nIcon=utilities-terminal\n" +
			"Exec=env QT_QPA_PLATFORM=xcb konsole\nTryExec=/usr/bin/konsole\n")},
		"quoted.desktop": {Data: []byte("[Desktop Entry]\nName=My App\nIcon=/opt/my app/icon.png\nExec=\"/opt/my app/run\" --x\n")},
		"link.desktop":   {Data: []byte("[Desktop Entry]\nType=Link\nName=A link\nExec=curl\n")},
		"noname.desktop": {Data: []byte("[Desktop Entry]\nExec=wget\n")},
		"readme.txt":     {Data: []byte("[Desktop Entry]\nName=Not an entry\nExec=ls\n")},
	})
	tests := []struct {
		exe      string
		wantName string
	}{
		{"/usr/lib/firefox-esr/firefox-esr", "Firefox ESR"},
		{"/usr/bin/konsole", "Konsole"},
		{"/usr/local/bin/konsole", "Konsole"}, // by name from Exec
		{"/opt/my app/run", "My App"},
		{"/usr/bin/curl", ""}, // a Link entry names no program
		{"/usr/bin/wget", ""}, // no Name
		{"/usr/bin/ls", ""},   // not a .desktop file
		{"/usr/bin/other", ""},
		{"", ""},
	}
	for _, tc := range tests {
		info, ok := idx.Lookup(tc.exe)
		if ok != (tc.wantName != "") || info.Name != tc.wantName {
			t.Errorf("Lookup(%q) = %+v, %v; want %q", tc.exe, info, ok, tc.wantName)
		}
	}
	var none *Index
	if _, ok := none.Lookup("/usr/bin/konsole"); ok {
		t.Error("a nil index found an entry")
	}
}

// TestLoadPrecedence: the user's own entry wins over the system's, and the
// data directories come from the environment given, not the process's.
func TestLoadPrecedence(t *testing.T) {
	home, sys := t.TempDir(), t.TempDir()
	write := func(dir, name, body string) {
		t.Helper()
		p := filepath.Join(dir, "applications", name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(home, ".local", "share"), "mine.desktop", "[Desktop Entry]\nName=My Editor\nExec=/usr/bin/ed\n")
	write(sys, "ed.desktop", "[Desktop Entry]\nName=Ed\nExec=/usr/bin/ed\n")
	write(sys, "vi.desktop", "[Desktop Entry]\nName=Vi\nExec=vi %F\n")
	env := map[string]string{"XDG_DATA_DIRS": sys + ":relative/ignored"}
	idx := Load(func(k string) string { return env[k] }, home)
	for exe, want := range map[string]string{"/usr/bin/ed": "My Editor", "/usr/bin/vi": "Vi"} {
		if info, _ := idx.Lookup(exe); info.Name != want {
			t.Errorf("Lookup(%q) = %q, want %q", exe, info.Name, want)
		}
	}
}

// TestMaxFiles: a folder with more entries than the bound is read only up
// to it.
func TestMaxFiles(t *testing.T) {
	fsys := fstest.MapFS{}
	for i := range MaxFiles + 10 {
		fsys[fmt.Sprintf("a%05d.desktop", i)] = &fstest.MapFile{Data: []byte(fmt.Sprintf("[Desktop Entry]\nName=P%d\nExec=/bin/p%d\n", i, i))}
	}
	idx := New()
	idx.AddDir(fsys)
	if _, ok := idx.Lookup(fmt.Sprintf("/bin/p%d", MaxFiles-1)); !ok {
		t.Error("the last entry within the bound is missing")
	}
	if _, ok := idx.Lookup(fmt.Sprintf("/bin/p%d", MaxFiles)); ok {
		t.Error("an entry beyond the bound was read")
	}
}

func FuzzParse(f *testing.F) {
	f.Add("[Desktop Entry]\nName=A\nExec=\"/a b\\\"c\" %u\nTryExec=x\n")
	f.Add("[Desktop Entry]\nName=\nExec=env A=1 B=2\n")
	f.Add("[Desktop Entry]\nName=x\nExec=\"unterminated\n")
	f.Fuzz(func(t *testing.T, data string) {
		info, progs := Parse(strings.NewReader(data))
		if len(progs) > 0 && info.Name == "" {
			t.Errorf("programs %q for an entry without a name", progs)
		}
		for _, p := range progs {
			if p == "" {
				t.Error("an empty program")
			}
		}
	})
}

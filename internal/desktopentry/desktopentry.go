package desktopentry

import (
	"bufio"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// MaxFiles bounds the .desktop files one Load reads (a desktop has a few
// hundred); the rest are skipped.
const MaxFiles = 20000

// Info is what a desktop entry says about a program.
type Info struct {
	Name string // "Firefox ESR"
	Icon string // an icon name ("firefox-esr") or an absolute path
}

// Index maps executables to their desktop entries. Entries are matched on
// the program of their Exec (or TryExec) line: an absolute path must equal
// the executable; a bare name must equal its base name.
type Index struct {
	byPath map[string]Info
	byName map[string]Info
	files  int
}

// New returns an empty index.
func New() *Index {
	return &Index{byPath: map[string]Info{}, byName: map[string]Info{}}
}

// Load reads the applications folders of the XDG data directories
// ($XDG_DATA_HOME, default ~/.local/share, then $XDG_DATA_DIRS, default
// /usr/local/share:/usr/share); the first entry for a program wins, as the
// XDG menu spec gives the user's own entries precedence. home is the
// user's home directory ("" when unknown).
func Load(getenv func(string) string, home string) *Index {
	dataHome := getenv("XDG_DATA_HOME")
	if dataHome == "" && home != "" {
		dataHome = filepath.Join(home, ".local", "share")
	}
	dirs := getenv("XDG_DATA_DIRS")
	if dirs == "" {
		dirs = "/usr/local/share:/usr/share"
	}
	idx := New()
	for _, d := range append([]string{dataHome}, filepath.SplitList(dirs)...) {
		if d != "" && filepath.IsAbs(d) {
			idx.AddDir(os.DirFS(filepath.Join(d, "applications")))
		}
	}
	return idx
}

// AddDir adds the .desktop files of fsys (an applications folder and its
// subfolders), up to MaxFiles in all.
func (idx *Index) AddDir(fsys fs.FS) {
	_ = fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if idx.files >= MaxFiles {
			return fs.SkipAll
		}
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".desktop") {
			return nil
		}
		f, err := fsys.Open(p)
		if err != nil {
			return nil
		}
		defer f.Close()
		idx.files++
		info, progs := Parse(f)
		for _, prog := range progs {
			idx.add(prog, info)
		}
		return nil
	})
}

func (idx *Index) add(prog string, info Info) {
	if path.IsAbs(prog) {
		if _, ok := idx.byPath[prog]; !ok {
			idx.byPath[prog] = info
		}
		return
	}
	if _, ok := idx.byName[prog]; !ok {
		idx.byName[prog] = info
	}
}

// Lookup finds the entry of exe (an absolute path); ok is false when there
// is none.
func (idx *Index) Lookup(exe string) (Info, bool) {
	if idx == nil || exe == "" {
		return Info{}, false
	}
	if info, ok := idx.byPath[exe]; ok {
		return info, true
	}
	info, ok := idx.byName[path.Base(exe)]
	return info, ok
}

// Parse reads the [Desktop Entry] group of a .desktop file: the
// untranslated Name and Icon, and the programs of Exec and TryExec.
// Hidden entries and NoDisplay ones still name their program, but entries
// that are not applications name none. Lines longer than 1 MiB end the
// file.
func Parse(r io.Reader) (Info, []string) {
	var (
		info       Info
		progs      []string
		inMain     bool
		typ        = "Application"
		exec, tryx string
	)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		if line[0] == '[' {
			inMain = line == "[Desktop Entry]"
			continue
		}
		if !inMain {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "Name":
			info.Name = strings.TrimSpace(v)
		case "Icon":
			info.Icon = strings.TrimSpace(v)
		case "Exec":
			exec = strings.TrimSpace(v)
		case "TryExec":
			tryx = strings.TrimSpace(v)
		case "Type":
			typ = strings.TrimSpace(v)
		}
	}
	if typ != "Application" || info.Name == "" {
		return Info{}, nil
	}
	if p := execProgram(exec); p != "" {
		progs = append(progs, p)
	}
	if tryx != "" && tryx != exec {
		progs = append(progs, tryx)
	}
	return info, progs
}

// execProgram is the program an Exec line runs, skipping an `env VAR=x`
// prefix and quotes: `env GDK_BACKEND=x11 "/opt/My App/app" %U` →
// "/opt/My App/app".
func execProgram(exec string) string {
	args := splitExec(exec)
	for len(args) > 0 {
		a := args[0]
		switch {
		case a == "env" || a == "/usr/bin/env":
			args = args[1:]
		case strings.Contains(a, "=") && !strings.Contains(a, "/"):
			args = args[1:]
		default:
			return a
		}
	}
	return ""
}

// splitExec splits an Exec value into arguments, honouring double quotes
// and backslash escapes inside them (the desktop entry spec's rules).
func splitExec(s string) []string {
	var (
		args  []string
		cur   strings.Builder
		quote bool
		any   bool
	)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote && c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case c == '"':
			quote, any = !quote, true
		case !quote && (c == ' ' || c == '\t'):
			if any {
				args = append(args, cur.String())
				cur.Reset()
				any = false
			}
		default:
			cur.WriteByte(c)
			any = true
		}
	}
	if any {
		args = append(args, cur.String())
	}
	return args
}

package cgroup2

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// ErrNotMounted is returned (wrapped) when no cgroup2 file system is
// mounted.
var ErrNotMounted = errors.New("no cgroup2 file system is mounted")

// Mount returns where the cgroup v2 hierarchy is mounted, read from
// /proc/self/mountinfo.
func Mount() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("find cgroup2 mount: %w", err)
	}
	defer f.Close()
	return parseMount(f)
}

// parseMount returns the mount point of the first cgroup2 mount of the
// hierarchy's root (a bind mount of a child cgroup is not the root), or,
// when there is none, of the first cgroup2 mount.
func parseMount(r io.Reader) (string, error) {
	var first string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20) // a line holds two paths, each up to PATH_MAX
	for sc.Scan() {
		// "36 25 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw":
		// mount ID, parent ID, major:minor, root, mount point, options,
		// optional fields up to "-", then the file system type.
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		fields, fsType := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 5 || len(fsType) < 1 || fsType[0] != "cgroup2" {
			continue
		}
		point := unescape(fields[4])
		if unescape(fields[3]) == "/" {
			return point, nil
		}
		if first == "" {
			first = point
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("find cgroup2 mount: read mountinfo: %w", err)
	}
	if first == "" {
		return "", fmt.Errorf("find cgroup2 mount: %w", ErrNotMounted)
	}
	return first, nil
}

// unescape undoes mountinfo's octal escapes of space, tab, newline and
// backslash (\040, \011, \012, \134); anything else is kept as it is.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

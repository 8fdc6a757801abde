package cgroup2

import (
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"testing/iotest"
)

func TestParseMount(t *testing.T) {
	for _, tc := range []struct {
		name, mountinfo, want string
	}{
		{
			name: "hybrid: unified",
			mountinfo: "25 1 0:22 / / rw - ext4 /dev/vda rw\n" +
				"40 31 0:37 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n" +
				"41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw\n",
			want: "/sys/fs/cgroup/unified",
		},
		{
			name:      "unified only, optional fields",
			mountinfo: "36 25 0:30 / /sys/fs/cgroup rw,nosuid shared:9 master:2 - cgroup2 cgroup2 rw,nsdelegate\n",
			want:      "/sys/fs/cgroup",
		},
		{
			name:      "escaped space, tab, newline and backslash",
			mountinfo: `36 25 0:30 / /mnt/my\040cg\011x\012y\134z rw - cgroup2 cgroup2 rw` + "\n",
			want:      "/mnt/my cg\tx\ny\\z",
		},
		{
			name:      "a backslash that is no escape stays",
			mountinfo: `36 25 0:30 / /mnt/a\9b\04 rw - cgroup2 cgroup2 rw` + "\n",
			want:      `/mnt/a\9b\04`,
		},
		{
			name: "the hierarchy's root before a bind mount of a child",
			mountinfo: "50 25 0:30 /machine.slice /srv/cg rw - cgroup2 cgroup2 rw\n" +
				"36 25 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
			want: "/sys/fs/cgroup",
		},
		{
			name:      "only a child mounted: that one",
			mountinfo: "50 25 0:30 /machine.slice /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
			want:      "/sys/fs/cgroup",
		},
		{
			name:      "a mount point named like the separator",
			mountinfo: "60 25 0:40 / /mnt/x\\040-\\040cgroup2 rw - tmpfs tmpfs rw\n36 25 0:30 / /cg rw - cgroup2 cgroup2 rw\n",
			want:      "/cg",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseMount(strings.NewReader(tc.mountinfo))
			if err != nil || got != tc.want {
				t.Fatalf("parseMount = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestParseMountNone(t *testing.T) {
	_, err := parseMount(strings.NewReader("25 1 0:22 / / rw - ext4 /dev/vda rw\n40 31 0:37 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"))
	if !errors.Is(err, ErrNotMounted) {
		t.Fatalf("no cgroup2 mount: err %v, want ErrNotMounted", err)
	}
}

// A read error is reported, not taken for "not mounted", even after a
// cgroup2 mount that is not the hierarchy's root.
func TestParseMountReadError(t *testing.T) {
	broken := errors.New("read failed")
	r := io.MultiReader(strings.NewReader("50 25 0:30 /child /srv/cg rw - cgroup2 cgroup2 rw\n"), iotest.ErrReader(broken))
	if got, err := parseMount(r); !errors.Is(err, broken) {
		t.Fatalf("parseMount = %q, %v; want the read error", got, err)
	}
	long := strings.Repeat("x", 2<<20) // longer than any mountinfo line
	if got, err := parseMount(strings.NewReader(long)); err == nil || errors.Is(err, ErrNotMounted) {
		t.Fatalf("overlong line: parseMount = %q, %v; want a read error", got, err)
	}
}

// TestMount reads this machine's mountinfo: cgroup v2 is mounted here
// wherever the sockops mechanism can work.
func TestMount(t *testing.T) {
	got, err := Mount()
	if errors.Is(err, ErrNotMounted) {
		t.Skip("no cgroup2 file system is mounted on this machine")
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(got + "/cgroup.procs"); err != nil {
		t.Errorf("Mount() = %q, which has no cgroup.procs: %v", got, err)
	}
}

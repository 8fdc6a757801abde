package procfs

import (
	"errors"
	"os"
	"testing"
	"testing/fstest"
)

func TestInodeScanner(t *testing.T) {
	fsys := fstest.MapFS{
		"self":         symlink("10"),
		"net/tcp":      {Data: []byte("not a process")},
		"10/fd/0":      symlink("/dev/null"),
		"10/fd/3":      symlink("socket:[100]"),
		"10/fd/4":      symlink("socket:[bogus]"),
		"10/fd/5":      symlink("socket:[101"),
		"20/fd/7":      symlink("socket:[200]"),
		"20/task/21/x": {Data: nil}, // threads are not scanned
		"30/stat":      {Data: []byte("zombie without fd dir")},
		"0/fd/1":       symlink("socket:[300]"), // no pid 0
	}
	tests := []struct {
		inode   uint64
		want    uint32
		wantErr bool
	}{
		{inode: 100, want: 10},
		{inode: 200, want: 20},
		{inode: 101, wantErr: true},
		{inode: 300, wantErr: true},
		{inode: 999, wantErr: true},
	}
	s := newInodeScanner(fsys)
	for _, tt := range tests {
		got, err := s.find(tt.inode)
		if tt.wantErr {
			if !errors.Is(err, ErrNotFound) {
				t.Errorf("find(%d) = %d, %v; want ErrNotFound", tt.inode, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("find(%d) = %d, %v; want %d", tt.inode, got, err, tt.want)
		}
	}

	// The cache must notice a moved socket rather than answer stale.
	if _, ok := s.cache[200]; !ok {
		t.Fatal("inode 200 not cached after a scan")
	}
	delete(fsys, "20/fd/7")
	fsys["30/fd/9"] = symlink("socket:[200]")
	if got, err := s.find(200); err != nil || got != 30 {
		t.Errorf("find(200) after the socket moved = %d, %v; want 30", got, err)
	}
	delete(fsys, "30/fd/9")
	if got, err := s.find(200); !errors.Is(err, ErrNotFound) {
		t.Errorf("find(200) after the socket closed = %d, %v; want ErrNotFound", got, err)
	}
}

func TestInodeScannerFixture(t *testing.T) {
	s := newInodeScanner(os.DirFS("testdata/proc"))
	if got, err := s.find(555); err != nil || got != 4242 {
		t.Errorf("find(555) = %d, %v; want 4242", got, err)
	}
}

func TestSocketInode(t *testing.T) {
	tests := []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"socket:[12345]", 12345, true},
		{"socket:[]", 0, false},
		{"socket:[-1]", 0, false},
		{"pipe:[12]", 0, false},
		{"socket:[18446744073709551616]", 0, false},
		{"/tmp/socket:[1]", 0, false},
	}
	for _, tt := range tests {
		got, ok := socketInode(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("socketInode(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

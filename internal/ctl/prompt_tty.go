package ctl

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// cbreak puts the terminal on in into cbreak mode, where each key reaches
// the program at once and is not echoed, and returns what restores it; ok
// is false when in is not a terminal. Ctrl-C still interrupts (ISIG stays)
// and output is unchanged (OPOST stays).
func cbreak(in io.Reader) (restore func(), ok bool) {
	f, isFile := in.(*os.File)
	if !isFile {
		return nil, false
	}
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, false
	}
	t := *old
	t.Lflag &^= unix.ICANON | unix.ECHO
	t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &t); err != nil {
		return nil, false
	}
	return func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, old) }, true
}

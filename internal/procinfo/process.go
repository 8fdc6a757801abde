package procinfo

import (
	"fmt"
	"io/fs"
	"os/user"
	"path"
	"strconv"
	"strings"
)

// Parent describes process ppid from procFS (rooted at /proc) as
// "PID 10 /usr/bin/bash (bash)". The parent may have exited or belong to
// another user, so it shows what it can: "PID 11 (sshd)", "PID 13", or
// "unknown" for PPID 0.
func Parent(procFS fs.FS, ppid uint32) string {
	if ppid == 0 {
		return "unknown"
	}
	d := fmt.Sprintf("PID %d", ppid)
	if procFS == nil {
		return d
	}
	exe, name := Exe(procFS, ppid)
	switch {
	case exe != "" && name != "":
		return d + " " + exe + " (" + name + ")"
	case exe != "":
		return d + " " + exe
	case name != "":
		return d + " (" + name + ")"
	}
	return d
}

// Exe returns what procFS says about process pid: its executable (the
// target of /proc/PID/exe) and its kernel name (/proc/PID/comm), either
// empty when it cannot be read.
func Exe(procFS fs.FS, pid uint32) (exe, comm string) {
	dir := strconv.FormatUint(uint64(pid), 10)
	exe, _ = fs.ReadLink(procFS, path.Join(dir, "exe"))
	c, _ := fs.ReadFile(procFS, path.Join(dir, "comm"))
	return exe, strings.TrimSpace(string(c))
}

// UserName looks up the login name of uid in the user database.
func UserName(uid uint32) (string, error) {
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return "", fmt.Errorf("look up uid %d: %w", uid, err)
	}
	return u.Username, nil
}

package gtkclient

import (
	"os"

	"github.com/bastion-fw/bastion/internal/desktopentry"
)

// appIndex maps executables to their desktop entries
// (internal/desktopentry, which bastionctl shares).
type appIndex = desktopentry.Index

// loadAppIndex reads the desktop entries of the XDG data directories.
func loadAppIndex() *appIndex {
	home, _ := os.UserHomeDir()
	return desktopentry.Load(os.Getenv, home)
}

// Package desktopentry finds the human name and icon of a program from
// the XDG desktop entries (.desktop files) installed for it, as the
// desktop's menus show it: "Firefox ESR" for
// /usr/lib/firefox-esr/firefox-esr. bastionctl names programs with it;
// the lookup is the one bastion-gtk's prompt uses (gtkclient/appinfo.go),
// ported here so that the command line needs no GTK.
//
// Trust boundary: the entries come from the user's own data directory and
// the system's; they are read best effort and bounded (files, line
// length), and what they say is only shown, through internal/inert, never
// run.
package desktopentry

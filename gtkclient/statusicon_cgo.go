package gtkclient

// #cgo pkg-config: gtk+-3.0
// #cgo CFLAGS: -Wno-deprecated-declarations
// #include <gtk/gtk.h>
//
// static GObject *bastion_status_icon_new(void) {
// 	return G_OBJECT(gtk_status_icon_new());
// }
import "C"

import (
	"unsafe"

	"github.com/gotk3/gotk3/glib"
)

// newGtkStatusIcon makes a GtkStatusIcon. gotk3 wraps it only under the
// gtk_deprecated build tag, which would change how all of gotk3 builds;
// its properties and signals are reached through glib.Object instead.
func newGtkStatusIcon() *glib.Object {
	return glib.Take(unsafe.Pointer(C.bastion_status_icon_new()))
}

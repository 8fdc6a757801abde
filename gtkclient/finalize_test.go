package gtkclient

import (
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/gotk3/gotk3/glib"
)

// TestFinalizersRunOnGTKThread: gotk3 drops a collected object's
// reference on the GTK thread, not on the finalizer's, where destroying a
// widget races the main loop and crashes GTK now and then.
func TestFinalizersRunOnGTKThread(t *testing.T) {
	needGTK(t)
	var gtkThread int
	onGTK(t, func() { gtkThread = syscall.Gettid() })
	ran := make(chan int, 1)
	go func() {
		runtime.LockOSThread() // a thread other than the GTK one, as the finalizers'
		defer runtime.UnlockOSThread()
		glib.FinalizerStrategy(func() { ran <- syscall.Gettid() })
	}()
	select {
	case tid := <-ran:
		if tid != gtkThread {
			t.Errorf("a finalizer ran on thread %d, not on the GTK thread %d", tid, gtkThread)
		}
	case <-time.After(waitTimeout):
		t.Fatal("a finalizer did not run within 15s")
	}

}

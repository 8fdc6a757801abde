package gtkclient

import (
	"context"
	"time"

	"github.com/gotk3/gotk3/gtk"
	"google.golang.org/protobuf/types/known/durationpb"

	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// Pausing protection: the rules service allows and logs the user's
// connections that no rule decides, then resumes by itself (uiserver
// pause.go). Here: the requests, and showing it in the status icon and
// the main window.

// pausedUntil is when the pause of protection ends, zero when there is
// none; GTK thread.
func (a *app) pausedUntil() time.Time {
	pu := a.status.GetPausedUntil()
	if pu == nil {
		return time.Time{}
	}
	t := pu.AsTime()
	if !a.now().Before(t) {
		return time.Time{} // resumed by now; the next status says so
	}
	return t
}

// pause asks the rules service to pause protection for d; GTK thread.
func (a *app) pause(d time.Duration) {
	call(a, func(ctx context.Context, ui uiv1.UIServiceClient) (*uiv1.PauseProtectionResponse, error) {
		return ui.PauseProtection(ctx, &uiv1.PauseProtectionRequest{Duration: durationpb.New(d)})
	}, func(resp *uiv1.PauseProtectionResponse, err error) {
		if err != nil {
			a.log.Warn("pause protection", "err", err)
			if a.main != nil {
				a.main.fail("Could not pause protection", err)
			}
			return
		}
		a.log.Info("protection paused", "until", resp.GetPausedUntil().AsTime())
		a.setPausedUntil(resp)
	})
}

// resume asks the rules service to resume protection now; GTK thread.
func (a *app) resume() {
	call(a, func(ctx context.Context, ui uiv1.UIServiceClient) (*uiv1.ResumeProtectionResponse, error) {
		return ui.ResumeProtection(ctx, &uiv1.ResumeProtectionRequest{})
	}, func(_ *uiv1.ResumeProtectionResponse, err error) {
		if err != nil {
			a.log.Warn("resume protection", "err", err)
			if a.main != nil {
				a.main.fail("Could not resume protection", err)
			}
			return
		}
		a.log.Info("protection resumed")
		a.setPausedUntil(nil)
	})
}

// setPausedUntil records a pause (nil: none) at once, before the next
// status poll confirms it.
func (a *app) setPausedUntil(resp *uiv1.PauseProtectionResponse) {
	if a.status == nil {
		a.status = &uiv1.GetStatusResponse{}
	}
	a.status.PausedUntil = resp.GetPausedUntil()
	a.protectionChanged()
}

// protectionChanged shows the pause state everywhere; GTK thread.
func (a *app) protectionChanged() {
	if a.tray != nil {
		a.tray.update()
	}
	if a.main != nil && a.main.pause != nil {
		a.main.pause.update()
	}
}

func (a *app) resumeLabel() string {
	if t := a.pausedUntil(); !t.IsZero() {
		return "Resume protection (paused until " + t.In(a.loc).Format("15:04") + ")"
	}
	return "Resume protection"
}

// pauseBar is the main window's line that says protection is paused,
// with a Resume button.
type pauseBar struct {
	a      *app
	bar    *gtk.InfoBar
	text   *gtk.Label
	resume *gtk.Button
}

func newPauseBar(a *app) *pauseBar {
	b := &pauseBar{a: a}
	b.bar, _ = gtk.InfoBarNew()
	b.bar.SetMessageType(gtk.MESSAGE_WARNING)
	b.text = mustLabel("")
	b.text.SetLineWrap(true)
	content, _ := b.bar.GetContentArea()
	content.PackStart(b.text, true, true, 0)
	b.resume = mustButton("_Resume protection")
	b.resume.Connect("clicked", a.resume)
	content.PackEnd(b.resume, false, false, 0)
	// The main window's ShowAll must not show the bar; showing it shows
	// only the bar itself, so its children are shown here.
	b.text.Show()
	b.resume.Show()
	b.bar.SetNoShowAll(true)
	b.update()
	return b
}

func (b *pauseBar) update() {
	t := b.a.pausedUntil()
	if t.IsZero() {
		b.bar.Hide()
		return
	}
	b.text.SetText("Protection is paused until " + t.In(b.a.loc).Format("15:04") +
		": your programs' new connections are allowed and logged without a prompt. Your rules still apply. It resumes by itself.")
	b.bar.Show()
}

package gtkclient

import (
	"github.com/gotk3/gotk3/gdk"
	"github.com/gotk3/gotk3/gtk"
	"github.com/gotk3/gotk3/pango"
)

// css styles both windows on top of the user's theme: it only sets sizes,
// weights and the action colours, so dark themes still work.
const css = `
.bastion-title { font-size: 15pt; font-weight: bold; }
.bastion-subtitle { font-size: 10.5pt; }
.bastion-key { color: alpha(currentColor, 0.65); }
.bastion-mono { font-family: monospace; }
.bastion-more { font-weight: bold; padding: 2px 8px; border-radius: 10px;
  background-color: alpha(#3584e4, 0.18); }
.bastion-countdown { font-weight: bold; }
.bastion-rule { padding: 8px 10px; border-radius: 6px; background-color: alpha(currentColor, 0.07); }
.bastion-error { color: #c01c28; }
.bastion-action { min-width: 92px; min-height: 30px; font-weight: bold; }
.bastion-allow { background-image: none; background-color: #2ec27e; color: white; border-color: #26a269; }
.bastion-allow:disabled { background-color: alpha(#2ec27e, 0.45); color: alpha(white, 0.8); }
.bastion-deny { background-image: none; background-color: #e01b24; color: white; border-color: #c01c28; }
.bastion-deny:disabled { background-color: alpha(#e01b24, 0.45); color: alpha(white, 0.8); }
.bastion-banner-text { font-weight: bold; }
`

// installCSS adds css for the default screen; GTK thread.
func installCSS() {
	p, err := gtk.CssProviderNew()
	if err != nil {
		return
	}
	if err := p.LoadFromData(css); err != nil {
		return
	}
	screen, err := gdk.ScreenGetDefault()
	if err != nil {
		return
	}
	gtk.AddProviderForScreen(screen, p, gtk.STYLE_PROVIDER_PRIORITY_APPLICATION)
}

func addClass(w interface {
	GetStyleContext() (*gtk.StyleContext, error)
}, classes ...string) {
	sc, err := w.GetStyleContext()
	if err != nil {
		return
	}
	for _, c := range classes {
		sc.AddClass(c)
	}
}

// Small constructors that drop the errors gotk3 returns when GTK could
// not allocate a widget, which only happens when GTK is not initialised.

// setClass adds or removes a style class.
func setClass(w interface {
	GetStyleContext() (*gtk.StyleContext, error)
}, class string, on bool) {
	sc, err := w.GetStyleContext()
	if err != nil {
		return
	}
	if on {
		sc.AddClass(class)
	} else {
		sc.RemoveClass(class)
	}
}

func mustLabel(text string) *gtk.Label {
	l, err := gtk.LabelNew(text)
	if err != nil {
		panic("gtk: create label: " + err.Error())
	}
	l.SetXAlign(0)
	return l
}

// valueLabel is a selectable, wrapping plain-text label for untrusted
// values (never markup).
func valueLabel() *gtk.Label {
	l := mustLabel("")
	l.SetSelectable(true)
	l.SetLineWrap(true)
	l.SetLineWrapMode(pango.WRAP_WORD_CHAR) // long paths and command lines wrap anywhere
	l.SetHExpand(true)
	l.SetCanFocus(false)
	return l
}

func mustBox(o gtk.Orientation, spacing int) *gtk.Box {
	b, err := gtk.BoxNew(o, spacing)
	if err != nil {
		panic("gtk: create box: " + err.Error())
	}
	return b
}

func mustButton(mnemonic string) *gtk.Button {
	b, err := gtk.ButtonNewWithMnemonic(mnemonic)
	if err != nil {
		panic("gtk: create button: " + err.Error())
	}
	return b
}

func mustGrid() *gtk.Grid {
	g, err := gtk.GridNew()
	if err != nil {
		panic("gtk: create grid: " + err.Error())
	}
	return g
}

func mustCombo() *gtk.ComboBoxText {
	c, err := gtk.ComboBoxTextNew()
	if err != nil {
		panic("gtk: create combo box: " + err.Error())
	}
	return c
}

func mustScrolled() *gtk.ScrolledWindow {
	s, err := gtk.ScrolledWindowNew(nil, nil)
	if err != nil {
		panic("gtk: create scrolled window: " + err.Error())
	}
	s.SetPolicy(gtk.POLICY_AUTOMATIC, gtk.POLICY_AUTOMATIC)
	return s
}

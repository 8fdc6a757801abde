package gtkclient

import (
	"fmt"
	"strings"
	"time"

	"github.com/gotk3/gotk3/glib"
	"github.com/gotk3/gotk3/gtk"

	"github.com/bastion-fw/bastion/internal/inert"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
)

// agentStatusKeys are the agent section's rows, "Agent" first.
func agentStatusKeys() []string {
	return []string{"Agent", "Network namespace", "Identification", "Firewall", "Reused UDP ports", "Host names", "Kernel decisions",
		"Decided in the last minute", "Agent version", "Running since"}
}

func (m *mainWindow) statusPage() gtk.IWidget {
	grid := mustGrid()
	grid.SetRowSpacing(8)
	grid.SetColumnSpacing(24)
	grid.SetMarginTop(18)
	grid.SetMarginStart(24)
	grid.SetMarginEnd(24)
	row := 0
	section := func(title string) {
		l := mustLabel(title)
		addClass(l, "bastion-subtitle")
		l.SetMarginTop(8)
		l.SetMarkup("<b>" + glib.MarkupEscapeText(title) + "</b>")
		grid.Attach(l, 0, row, 2, 1)
		row++
	}
	add := func(key string) {
		k := mustLabel(key)
		addClass(k, "bastion-key")
		v := valueLabel()
		grid.Attach(k, 0, row, 1, 1)
		grid.Attach(v, 1, row, 1, 1)
		m.statusValues[key] = v
		row++
	}
	section("Rules service")
	for _, k := range []string{"Connection", "Socket", "Version", "Rules", "Rules database", "Prompt clients", "Waiting prompts",
		"Unanswered prompts", "No prompt client"} {
		add(k)
	}
	section("Agent")
	for _, k := range agentStatusKeys() {
		add(k)
	}
	sw := mustScrolled()
	sw.Add(grid)
	return sw
}

// statusChanged shows the connection state in the banner and the status
// page.
func (m *mainWindow) statusChanged() {
	a := m.a
	st := a.status
	set := func(k, v string) { m.statusValues[k].SetText(v) }
	set("Socket", a.cfg.UISocket)
	switch {
	case !a.up && a.upErr == nil:
		m.bannerText.SetText("Connecting to the rules service…")
		m.banner.SetMessageType(gtk.MESSAGE_INFO)
		m.banner.Show()
		set("Connection", "connecting…")
	case !a.up:
		m.banner.SetMessageType(gtk.MESSAGE_ERROR)
		m.bannerText.SetText(fmt.Sprintf("Not connected to your rules service (bastion-uiserver) at %s. "+
			"Reconnecting automatically… Until then, prompts cannot be shown here.", a.cfg.UISocket))
		m.bannerText.SetTooltipText(statusMessage(a.upErr))
		m.banner.Show()
		set("Connection", "not connected: "+statusMessage(a.upErr))
	case !st.GetAgentConnected():
		m.banner.SetMessageType(gtk.MESSAGE_WARNING)
		m.bannerText.SetText("The Bastion agent is not connected to the rules service: your rules are not enforced " +
			"and nobody will be asked about new connections until it is back.")
		m.banner.Show()
		set("Connection", "connected")
	default:
		m.banner.Hide()
		set("Connection", "connected")
	}
	m.preferencesConnection()
	if !a.up || st == nil {
		return
	}
	set("Version", orDash(st.GetVersion()))
	set("Rules", fmt.Sprint(st.GetRules()))
	set("Rules database", orDash(st.GetStorePath()))
	set("Prompt clients", fmt.Sprint(st.GetPromptClients()))
	set("Waiting prompts", fmt.Sprint(st.GetPendingPrompts()))
	set("Unanswered prompts", fmt.Sprintf("%s after %s", settingAction(st.GetTimeoutAction()), st.GetPromptTimeout().AsDuration()))
	set("No prompt client", settingAction(st.GetSilentAction())+" (listed under Decide later)")
	ag := st.GetAgent()
	if !st.GetAgentConnected() || ag == nil {
		for _, k := range agentStatusKeys()[1:] {
			set(k, "-")
		}
		set("Agent", "not connected")
		return
	}
	set("Agent", "connected")
	set("Network namespace", netnsText(ag.GetNetns()))
	set("Identification", orDash(ag.GetMechanism())+"  ("+strings.Join(ag.GetFeatures(), ", ")+")")
	fw := fmt.Sprintf("%s, queue %d", orDash(ag.GetFirewallBackend()), ag.GetQueueNum())
	if ag.GetFailOpen() {
		fw += ", fail-open"
	} else {
		fw += ", fail-closed"
	}
	set("Firewall", fw)
	// A new UDP socket that reuses an old flow's ports is asked about
	// only while this protection is active.
	set("Reused UDP ports", orDash(ag.GetUdpReuseProtection()))
	if ag.GetDnsQueueNum() != 0 {
		set("Host names", fmt.Sprintf("from DNS answers, %d addresses named", ag.GetDnsNames()))
	} else {
		set("Host names", "off (connections show addresses only)")
	}
	mech, split := kernelDecisionsText(ag.GetKernelDecisions())
	set("Kernel decisions", mech)
	set("Decided in the last minute", split)
	set("Agent version", orDash(ag.GetVersion()))
	if ag.GetStarted() != nil {
		set("Running since", ag.GetStarted().AsTime().In(a.loc).Format(time.DateTime))
	}
}

// kernelDecisionsText says in words how connections are decided in the
// kernel (the mechanism and the user's remembered decisions) and the last
// minute's split between the kernel and userspace.
func kernelDecisionsText(kd *agentv1.KernelDecisions) (mechanism, lastMinute string) {
	if kd == nil {
		return "unknown (the agent does not report it)", "-"
	}
	reason := inert.String(kd.GetReason())
	switch m := inert.String(kd.GetMechanism()); m {
	case "off":
		mechanism = "off (" + reason + "): every new connection goes through the agent"
	case "unavailable":
		mechanism = "unavailable (" + reason + "): every new connection goes through the agent"
	default:
		if reason != "" {
			mechanism = fmt.Sprintf("on (%s); your remembered decisions are unknown: %s", m, reason)
		} else {
			mechanism = fmt.Sprintf("on (%s): %d of your decisions remembered in the kernel", m, kd.GetEntries())
		}
	}
	kern, user := kd.GetLastMinuteKernel(), kd.GetLastMinuteUserspace()
	if kern+user == 0 {
		return mechanism, "no decisions"
	}
	pct := fmt.Sprintf("%d%%", kern*100/(kern+user))
	if kern != 0 && kern*100 < kern+user {
		pct = "<1%"
	}
	return mechanism, fmt.Sprintf("%d decided in the kernel, %d by the agent (%s in the kernel)", kern, user, pct)
}

// netnsText names the network namespace the agent guards.
func netnsText(ns string) string {
	if ns == "" {
		return "the host's own: every connection of this computer is guarded"
	}
	return inert.String(ns) + ": only connections made in this namespace are guarded, not the host's"
}

// settingAction words a setting's action as the Preferences page does: a
// deny is a silent drop.
func settingAction(a rulesv1.Action) string {
	if a == rulesv1.Action_ACTION_DENY {
		return "drop silently"
	}
	return actionName(a)
}

package demo

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/bastion-fw/bastion/internal/testenv/fakeui"
	agentv1 "github.com/bastion-fw/bastion/proto/bastion/agent/v1"
	rulesv1 "github.com/bastion-fw/bastion/proto/bastion/rules/v1"
	uiv1 "github.com/bastion-fw/bastion/proto/bastion/ui/v1"
)

// The programs of a desktop's day, for the Programs page: a browser that
// streams video, a music player, a mail client, a video call, command-line
// tools, a time daemon, a program denied by a rule and one whose
// executable was not identified.

// DesktopEntries are .desktop files for the sample programs that have
// one, by file name. Their icons are the generic ones of the Adwaita
// theme, which the machines that take screenshots have, rather than the
// applications' own.
var DesktopEntries = map[string]string{
	"firefox-esr.desktop": "[Desktop Entry]\nType=Application\nName=Firefox ESR\nIcon=web-browser\nExec=/usr/lib/firefox-esr/firefox-esr %u\n",
	"spotify.desktop":     "[Desktop Entry]\nType=Application\nName=Spotify\nIcon=audio-headphones\nExec=spotify %U\nTryExec=/usr/share/spotify/spotify\n",
	"thunderbird.desktop": "[Desktop Entry]\nType=Application\nName=Thunderbird\nIcon=mail-send-receive\nExec=/usr/lib/thunderbird/thunderbird %u\n",
	"zoom.desktop":        "[Desktop Entry]\nType=Application\nName=Zoom Workplace\nIcon=camera-video\nExec=/opt/zoom/zoom %U\n",
	"syncthing.desktop":   "[Desktop Entry]\nType=Application\nName=Syncthing\nIcon=emblem-synchronizing\nExec=/usr/bin/syncthing serve --no-browser\n",
}

// Sample program paths.
const (
	FirefoxExe = "/usr/lib/firefox-esr/firefox-esr"
	SpotifyExe = "/usr/share/spotify/spotify"
	CurlExe    = "/usr/bin/curl"
)

// demoProgram describes one sample program: its traffic per minute at a
// time (before noise), its destinations and what they carried.
type demoProgram struct {
	exe, comm string
	// rate is the bytes sent and received in the minute starting at t,
	// minutesAgo before now, and the connections allowed and denied.
	rate  func(t time.Time, minutesAgo int) (sent, recv float64, allowed, denied float64)
	dests []*uiv1.Destination
}

// SamplePrograms are the sample programs' traffic up to now: the minute
// buckets of the last 24 hours, the hour buckets of the last week, and
// today's summary (since local midnight in loc) made from the minutes.
// The rule IDs the destinations name are those fakeui gives SampleRules
// added first to an empty service.
func SamplePrograms(now time.Time, loc *time.Location) []*fakeui.Program {
	now = now.Truncate(time.Minute)
	var out []*fakeui.Program
	for i, d := range samplePrograms(now) {
		out = append(out, d.program(now, loc, uint64(i+1)))
	}
	return out
}

func (d demoProgram) program(now time.Time, loc *time.Location, seed uint64) *fakeui.Program {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	noise := func() float64 { return 0.35 + 1.3*rng.Float64() }
	l := now.In(loc)
	midnight := time.Date(l.Year(), l.Month(), l.Day(), 0, 0, 0, 0, loc)
	p := &fakeui.Program{Summary: &uiv1.ProgramSummary{Exe: d.exe, Comm: d.comm}}
	sum := p.Summary
	hours := map[time.Time]*uiv1.TrafficBucket{}
	for m := 24*60 - 1; m >= 0; m-- {
		t := now.Add(-time.Duration(m) * time.Minute)
		s, r, a, n := d.rate(t, m)
		k := noise()
		b := &uiv1.TrafficBucket{Start: timestamppb.New(t), BytesSent: uint64(s * k), BytesReceived: uint64(r * k),
			Allowed: uint64(math.Round(a * k)), Denied: uint64(math.Round(n))}
		if b.BytesSent+b.BytesReceived+b.Allowed+b.Denied == 0 {
			continue
		}
		p.Minutes = append(p.Minutes, b)
		h := t.Truncate(time.Hour)
		hb := hours[h]
		if hb == nil {
			hb = &uiv1.TrafficBucket{Start: timestamppb.New(h)}
			hours[h] = hb
			p.Hours = append(p.Hours, hb)
		}
		hb.BytesSent += b.BytesSent
		hb.BytesReceived += b.BytesReceived
		hb.Allowed += b.Allowed
		hb.Denied += b.Denied
		if !t.Before(midnight) {
			sum.BytesSent += b.BytesSent
			sum.BytesReceived += b.BytesReceived
			sum.Allowed += b.Allowed
			sum.Denied += b.Denied
			sum.LastActivity = timestamppb.New(t.Add(time.Duration(rng.IntN(60)) * time.Second))
		}
	}
	// The hours before the last 24, from the hourly rate.
	first := now.Truncate(time.Hour).Add(-24 * time.Hour)
	var older []*uiv1.TrafficBucket
	for h := first.Add(-143 * time.Hour); !h.After(first); h = h.Add(time.Hour) {
		if hours[h] != nil {
			continue
		}
		s, r, a, n := d.rate(h.Add(30*time.Minute), int(now.Sub(h)/time.Minute))
		k := noise()
		b := &uiv1.TrafficBucket{Start: timestamppb.New(h), BytesSent: uint64(60 * s * k), BytesReceived: uint64(60 * r * k),
			Allowed: uint64(math.Round(60 * a * k)), Denied: uint64(math.Round(60 * n))}
		if b.BytesSent+b.BytesReceived+b.Allowed+b.Denied > 0 {
			older = append(older, b)
		}
	}
	p.Hours = append(older, p.Hours...)
	seen := map[string]bool{}
	for _, dst := range d.dests {
		p.Destinations = append(p.Destinations, dst)
		seen[dst.GetHost()+"\x00"+dst.GetAddress()+"\x00"+dst.GetProtocol().String()+"\x00"+fmt.Sprint(dst.GetPort())] = true
	}
	sum.Destinations = uint32(len(seen))
	if sum.LastActivity == nil && len(d.dests) > 0 {
		sum.LastActivity = d.dests[0].GetLastSeen()
	}
	return p
}

// daytime is how busy a person is at t: little at night, most in working
// hours and the evening.
func daytime(t time.Time) float64 {
	h := float64(t.Hour()) + float64(t.Minute())/60
	switch {
	case h < 7:
		return 0.01
	case h < 9:
		return 0.2 + 0.4*(h-7)
	case h < 12.5:
		return 1
	case h < 13.5:
		return 0.35
	case h < 18:
		return 0.9
	case h < 20:
		return 0.4
	case h < 23:
		return 0.8
	}
	return 0.15
}

// wave is a slow 0..1 swell with a period of hours, so that busy and
// quiet stretches alternate within a day.
func wave(t time.Time, period time.Duration, phase float64) float64 {
	x := float64(t.UnixNano()%int64(period))/float64(period)*2*math.Pi + phase
	return 0.5 + 0.5*math.Sin(x)
}

func samplePrograms(now time.Time) []demoProgram {
	ago := func(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(now.Add(-d)) }
	tcp, udp := agentv1.Protocol_PROTOCOL_TCP, agentv1.Protocol_PROTOCOL_UDP
	allow, deny := rulesv1.Action_ACTION_ALLOW, rulesv1.Action_ACTION_DENY
	const kB, MB, GB = 1e3, 1e6, 1e9
	dest := func(host, addr string, proto agentv1.Protocol, port uint32, allowed, denied uint64, sent, recv float64,
		first, last time.Duration, by, rule string, act rulesv1.Action) *uiv1.Destination {
		return &uiv1.Destination{Host: host, Address: addr, Protocol: proto, Port: port, Allowed: allowed, Denied: denied,
			BytesSent: uint64(sent), BytesReceived: uint64(recv), FirstSeen: ago(first), LastSeen: ago(last),
			DecidedBy: by, RuleId: rule, LastAction: act}
	}
	const day = 24 * time.Hour
	return []demoProgram{
		{exe: FirefoxExe, comm: "firefox-esr",
			rate: func(t time.Time, m int) (float64, float64, float64, float64) {
				busy := daytime(t) * (0.3 + wave(t, 97*time.Minute, 0))
				if m < 60 {
					busy = 0.6 + wave(t, 23*time.Minute, 1) // someone is browsing now
				}
				if m >= 12 && m < 34 {
					busy *= 4 // a video
				}
				return busy * 260 * kB, busy * 6.5 * MB, busy * 14, 0.02 * busy
			},
			dests: []*uiv1.Destination{
				dest("www.youtube.com", "142.250.185.110", tcp, 443, 3120, 0, 240*MB, 3.1*GB, 35*day, 20*time.Second, "rule:0000000000000001", "0000000000000001", allow),
				dest("rr3---sn-4g5e6nsz.googlevideo.com", "173.194.182.136", udp, 443, 410, 0, 310*MB, 14*GB, 9*day, 13*time.Minute, "cache:7a2e", "", allow),
				dest("rr3---sn-4g5e6nsz.googlevideo.com", "173.194.182.136", tcp, 443, 120, 0, 40*MB, 1.2*GB, 9*day, 40*time.Minute, "rule:0000000000000001", "0000000000000001", allow),
				dest("en.wikipedia.org", "185.15.59.224", tcp, 443, 860, 0, 19*MB, 410*MB, 21*day, 3*time.Minute, "rule:0000000000000001", "0000000000000001", allow),
				dest("github.com", "140.82.121.4", tcp, 443, 570, 0, 33*MB, 270*MB, 30*day, 6*time.Minute, "rule:0000000000000001", "0000000000000001", allow),
				dest("push.services.mozilla.com", "34.117.65.55", tcp, 443, 90, 0, 840*kB, 610*kB, 40*day, 2*time.Minute, "cache:c1f3", "", allow),
				dest("incoming.telemetry.mozilla.org", "34.120.208.123", tcp, 443, 0, 97, 0, 0, 40*day, 9*time.Minute, "rule:0000000000000004", "0000000000000004", deny),
				dest("detectportal.firefox.com", "34.107.221.82", tcp, 80, 230, 0, 190*kB, 310*kB, 40*day, time.Minute, "prompt", "", allow),
				dest("", "192.168.1.1", tcp, 8080, 4, 0, 12*kB, 410*kB, 2*day, 50*time.Minute, "prompt", "", allow),
			}},
		{exe: SpotifyExe, comm: "spotify",
			rate: func(t time.Time, m int) (float64, float64, float64, float64) {
				if daytime(t) < 0.5 || wave(t, 5*time.Hour, 2) < 0.3 {
					return 0, 0, 0, 0
				}
				return 18 * kB, 1.2 * MB, 0.4, 0
			},
			dests: []*uiv1.Destination{
				dest("audio-ak.spotifycdn.com", "23.45.112.7", tcp, 443, 233, 0, 4.2*MB, 410*MB, 60*day, 4*time.Minute, "prompt", "", allow),
				dest("apresolve.spotify.com", "35.186.224.24", tcp, 443, 31, 0, 90*kB, 140*kB, 60*day, 2*time.Hour, "prompt", "", allow),
				dest("dealer.spotify.com", "104.199.65.124", tcp, 443, 11, 0, 610*kB, 1.1*MB, 60*day, 4*time.Minute, "prompt", "", allow),
			}},
		{exe: "/usr/lib/thunderbird/thunderbird", comm: "thunderbird",
			rate: func(t time.Time, m int) (float64, float64, float64, float64) {
				if m%10 != 3 || daytime(t) < 0.3 {
					return 0, 0, 0, 0
				}
				return 9 * kB, 160 * kB, 2, 0
			},
			dests: []*uiv1.Destination{
				dest("imap.fastmail.com", "103.168.172.60", tcp, 993, 412, 0, 3.1*MB, 58*MB, 90*day, 7*time.Minute, "prompt", "", allow),
				dest("smtp.fastmail.com", "103.168.172.45", tcp, 465, 6, 0, 2.4*MB, 31*kB, 90*day, 5*time.Hour, "prompt", "", allow),
			}},
		{exe: "/opt/zoom/zoom", comm: "zoom",
			rate: func(t time.Time, m int) (float64, float64, float64, float64) {
				if m >= 4*60+15 && m < 5*60 { // a 45-minute call
					return 1.6 * MB, 1.9 * MB, 0.5, 0
				}
				return 0, 0, 0, 0
			},
			dests: []*uiv1.Destination{
				dest("zoomfr148mmr.fr.zoom.us", "170.114.52.17", udp, 8801, 4, 0, 74*MB, 86*MB, 2*time.Hour+5*time.Hour, 4*time.Hour+15*time.Minute, "rule:0000000000000007", "0000000000000007", allow),
				dest("us04web.zoom.us", "170.114.10.80", tcp, 443, 3, 0, 420*kB, 1.3*MB, 5*time.Hour, 4*time.Hour+15*time.Minute, "rule:0000000000000007", "0000000000000007", allow),
			}},
		{exe: "/usr/bin/git", comm: "git",
			rate: func(t time.Time, m int) (float64, float64, float64, float64) {
				if m%47 != 20 || daytime(t) < 0.5 {
					return 0, 0, 0, 0
				}
				return 40 * kB, 2.2 * MB, 1, 0
			},
			dests: []*uiv1.Destination{
				dest("github.com", "140.82.121.4", tcp, 443, 38, 0, 1.3*MB, 71*MB, 12*day, 20*time.Minute, "rule:0000000000000002", "0000000000000002", allow),
				dest("codeload.github.com", "140.82.121.9", tcp, 443, 2, 0, 31*kB, 12*MB, 3*day, 26*time.Hour, "rule:0000000000000002", "0000000000000002", allow),
			}},
		{exe: CurlExe, comm: "curl",
			rate: func(t time.Time, m int) (float64, float64, float64, float64) {
				if m == 4 || m == 7 || m == 17 {
					return 3 * kB, 850 * kB, 1, 0
				}
				return 0, 0, 0, 0
			},
			dests: []*uiv1.Destination{
				dest("deb.debian.org", "151.101.2.132", tcp, 443, 3, 0, 8.2*kB, 2.4*MB, 18*time.Minute, 4*time.Minute, "rule:0000000000000003", "0000000000000003", allow),
				dest("example.com", "93.184.215.14", tcp, 443, 1, 0, 1.1*kB, 3.4*kB, 7*time.Minute, 7*time.Minute, "api:uid=1000", "", allow),
			}},
		{exe: "/usr/sbin/chronyd", comm: "chronyd",
			rate: func(t time.Time, m int) (float64, float64, float64, float64) {
				if m%8 != 0 {
					return 0, 0, 0, 0
				}
				return 4 * 76, 4 * 76, 4, 0
			},
			dests: []*uiv1.Destination{
				dest("0.debian.pool.ntp.org", "162.159.200.1", udp, 123, 1280, 0, 97*kB, 97*kB, 90*day, 9*time.Minute, "rule:0000000000000005", "0000000000000005", allow),
				dest("1.debian.pool.ntp.org", "195.154.174.209", udp, 123, 1280, 0, 97*kB, 97*kB, 90*day, 9*time.Minute, "rule:0000000000000005", "0000000000000005", allow),
				dest("2.debian.pool.ntp.org", "51.15.182.163", udp, 123, 1279, 0, 97*kB, 97*kB, 90*day, 9*time.Minute, "rule:0000000000000005", "0000000000000005", allow),
			}},
		{exe: "/usr/bin/ssh", comm: "ssh",
			rate: func(t time.Time, m int) (float64, float64, float64, float64) {
				if m >= 30 && m < 95 {
					return 6 * kB, 41 * kB, float64(m / 94), 0 // opened 94 minutes ago
				}
				if m == 95 {
					return 0, 0, 0, 1
				}
				return 0, 0, 0, 0
			},
			dests: []*uiv1.Destination{
				dest("", "2001:db8:4006:812::200e", tcp, 2222, 5, 2, 1.2*MB, 7.9*MB, 30*day, 30*time.Minute, "deadline", "", rulesv1.Action_ACTION_REJECT),
			}},
		{exe: "/usr/bin/syncthing", comm: "syncthing",
			rate: func(t time.Time, m int) (float64, float64, float64, float64) {
				if m%30 == 5 {
					return 0, 0, 0, 1
				}
				return 0, 0, 0, 0
			},
			dests: []*uiv1.Destination{
				dest("", "192.168.1.255", udp, 21027, 0, 48, 0, 0, 5*day, 2*time.Hour, "default", "", deny),
			}},
		{exe: "/usr/bin/python3.11", comm: "python3",
			rate: func(t time.Time, m int) (float64, float64, float64, float64) {
				if m == 200 || m == 201 {
					return 0, 0, 0, 3
				}
				return 0, 0, 0, 0
			},
			dests: []*uiv1.Destination{
				dest("", "10.0.0.5", tcp, 8000, 0, 6, 0, 0, 5*day, 200*time.Minute, "prompt", "", rulesv1.Action_ACTION_REJECT),
			}},
		// A process that exited before the agent read its executable.
		{comm: "nm-dispatcher",
			rate: func(t time.Time, m int) (float64, float64, float64, float64) {
				if m == 140 {
					return 420, 1.8 * kB, 2, 0
				}
				return 0, 0, 0, 0
			},
			dests: []*uiv1.Destination{
				dest("connectivity-check.ubuntu.com", "185.125.190.48", tcp, 80, 2, 0, 420, 1.8*kB, 140*time.Minute, 140*time.Minute, "prompt", "", allow),
			}},
	}
}

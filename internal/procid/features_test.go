package procid

import "testing"

func TestFeaturesBest(t *testing.T) {
	all := Features{BTF: true, NetfilterLink: true, SockOps: true, SockAddr: true, TpBtf: true}
	for _, tc := range []struct {
		name string
		off  func(*Features)
		want Mechanism
	}{
		{"everything (6.4+)", func(*Features) {}, MechNetfilterLink},
		{"no netfilter link (Debian 12's 6.1)", func(f *Features) { f.NetfilterLink = false }, MechSockOps},
		{"no tp_btf: exec tracking is optional", func(f *Features) { f.TpBtf = false }, MechNetfilterLink},
		{"no netfilter link, no sock_addr", func(f *Features) { f.NetfilterLink, f.SockAddr = false, false }, MechProcFS},
		{"no BTF", func(f *Features) { f.BTF = false }, MechProcFS},
	} {
		f := all
		tc.off(&f)
		if got := f.Best(); got != tc.want {
			t.Errorf("%s: Best() = %s, want %s", tc.name, got, tc.want)
		}
	}
}

package fw

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
)

// DetectBackend picks the iptables backend for the namespace (a name, a
// path, or "" for the caller's), so that Bastion's rules live beside the
// rules already there and their order is predictable:
//
//  1. if iptables-nft does not work (no nf_tables), use legacy;
//  2. if only one backend holds rules (any rule or user chain, in IPv4 or
//     IPv6), use that one;
//  3. otherwise (neither or both hold rules) use what the system's
//     "iptables" command is (Debian's update-alternatives choice), and nft
//     when that cannot be told.
//
// Setting Config.Backend overrides detection.
func DetectBackend(ctx context.Context, ns string) (Backend, error) {
	nft, err := newRunner(Config{Backend: BackendNFT, NetNS: ns})
	if err != nil {
		return "", err
	}
	legacy := nft
	legacy.backend = BackendLegacy

	if _, err := nft.run(ctx, "", "iptables-nft", "-w", "-L", "OUTPUT", "-n"); err != nil {
		if _, lerr := legacy.run(ctx, "", "iptables-legacy", "-w", "-L", "OUTPUT", "-n"); lerr != nil {
			return "", fmt.Errorf("fw: neither iptables backend works: nft: %w; legacy: %w", err, lerr)
		}
		return BackendLegacy, nil
	}
	nftUsed, err := inUse(ctx, nft)
	if err != nil {
		return "", err
	}
	legacyUsed, err := inUse(ctx, legacy)
	if err != nil {
		return "", err
	}
	switch {
	case nftUsed && !legacyUsed:
		return BackendNFT, nil
	case legacyUsed && !nftUsed:
		return BackendLegacy, nil
	}
	return systemBackend(), nil
}

// inUse reports whether a backend holds any rule or user-defined chain.
func inUse(ctx context.Context, r runner) (bool, error) {
	for _, f := range []family{familyV4, familyV6} {
		if f.v6 && !kernelHasIPv6() {
			continue
		}
		out, err := r.save(ctx, f)
		if err != nil {
			return false, err
		}
		for line := range strings.Lines(out) {
			if strings.HasPrefix(line, "-A ") || strings.HasPrefix(line, ":") && strings.Contains(line, " - [") {
				return true, nil
			}
		}
	}
	return false, nil
}

// systemBackend reads which multi-call binary "iptables" resolves to.
func systemBackend() Backend {
	path, err := exec.LookPath("iptables")
	if err != nil {
		return BackendNFT
	}
	target, err := filepath.EvalSymlinks(path)
	if err != nil {
		return BackendNFT
	}
	if strings.Contains(filepath.Base(target), "legacy") {
		return BackendLegacy
	}
	return BackendNFT
}

package procid

// The eBPF objects are generated from bpf/procid.c and committed, so that
// building Bastion never needs clang. Regenerate with `make generate-bpf`
// after changing the C source; `make check-generate` proves the committed
// objects are what the source compiles to. The compiler is pinned: the
// committed objects are byte for byte what Debian 12's clang-14 (14.0.6)
// and llvm-strip-14 make, with libbpf-dev's headers (the Makefile's
// BPF_CLANG_VERSION; another clang version may compile different bytes).
//go:generate go tool bpf2go -cc clang-14 -strip llvm-strip-14 -cflags "-O2 -g -Wall -mcpu=v3" -target bpfel -type flow_key -type flow_value -type exec_value -type parse_result -type recent_flow procid ../../bpf/procid.c -- -I../../bpf

package kdecide

// The eBPF object is generated from bpf/decide.c and committed, like
// internal/procid's (see its gen.go for the pinned compiler).
//go:generate go tool bpf2go -cc clang-14 -strip llvm-strip-14 -cflags "-O2 -g -Wall -mcpu=v3" -target bpfel -type kd_key -type kd_value -type kd_event -type kd_sock -type kd_config decide ../../bpf/decide.c -- -I../../bpf

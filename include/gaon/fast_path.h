// Fast paths: the part of an ikernel type that runs in the driver (XDP), in front of gaond.
//
// A type with a fast path ships a BPF program (src/ikernels/<name>/<name>.bpf.c, built and
// embedded like the steering program) and says so with IKernel::fast_path(). In a bump
// (afxdp ports) each of its instances gets, with its first flow, a run of the shared
// fast-path memory (gaon_fp_mem, gaon/xdp_abi.h), mapped into gaond: the instance lays out
// there the state its program reads (kvcache: its item table), and the steering program
// hands the frames of the instance's flows to that program, which answers them on the
// wire, forwards them in the kernel, or hands them up to gaond (process(), as before).
// Elsewhere (sidecar, mem ports, a bump out of fast-path memory) the instance simply runs
// without one: Context::fast_path() is nullptr.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace gaon {

// A further XDP program of a fast path's object, which the fast path tail-calls itself
// (gaon_fp_progs[prog]).
struct FastPathExtra {
  uint32_t prog = 0;
  std::string_view program;
};

// What a type runs in XDP (IKernel::fast_path); prog 0: nothing. On a server with one NIC
// (gaond --local) the object's other programs are attached too: its tc programs at the
// egress of the interfaces the XDP program runs on, its sock_ops program (every TCP
// connection; it picks those of attached flows) and cgroup_skb ingress program (the
// segments of the connections picked) on the cgroup. In a bump only its XDP programs are
// loaded.
struct FastPathSpec {
  uint32_t prog = 0;                      // enum gaon_fp_prog (gaon/xdp_abi.h)
  std::string_view program;               // the XDP program's name in the object
  std::span<const unsigned char> object;  // the BPF object file
  size_t bytes = 0;                       // fast-path memory the instance needs
  size_t kernel_bytes = 0;  // the same on a server with one NIC (writers in the kernel)
  std::span<const FastPathExtra> extras;
  explicit operator bool() const { return prog != 0; }
};

// The fast-path memory given to one instance: `bytes` zeroed bytes (whole chunks of
// GAON_FP_CHUNK), shared with its program. `slot` is its gaon_fp_slots entry.
struct FastPathState {
  uint8_t* mem = nullptr;
  size_t bytes = 0;
  uint32_t slot = 0;
  // A server with one NIC (gaond --local): the type's programs on the application's own
  // interface and sockets write the state too (kvcache: fills and invalidations), so the
  // instance lays it out for writers in the kernel.
  bool kernel_writers = false;
};

}  // namespace gaon

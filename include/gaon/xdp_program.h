// gaon's XDP programs as gaond holds them: the steering program (src/bpf/steer.bpf.c)
// with its maps, the fast paths of ikernel types (fast_path.h), each instance's share of
// the fast-path memory, and the lease. Used by the AF_XDP bump (afxdp.h), which attaches
// the program to its interfaces, and by the tests, which run it with BPF_PROG_TEST_RUN.
//
//   auto x = XdpProgram::load({});                  // verifier, map size checks (one line)
//   x->set_port(ifindex, GAON_WIRE, 1);             // which side an interface is
//   x->add_flow(key, instance, spec);               // steer a flow; fast path if any
//   FastPathState* fp = x->fast_path(instance);     // the instance's memory, mapped
//
// Every layout is in gaon/xdp_abi.h; load() refuses an object whose maps differ from it.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gaon/counters.h"
#include "gaon/fast_path.h"
#include "gaon/flow.h"
#include "gaon/result.h"
#include "gaon/xdp_abi.h"

struct bpf_object;
struct bpf_link;
struct xdp_program;

namespace gaon {

class XdpProgram {
 public:
  struct Options {
    std::string object_file;                      // steer.bpf.o; empty: the one built in
    uint32_t fp_chunks = GAON_FP_CHUNKS_DEFAULT;  // fast-path memory, in GAON_FP_CHUNK units
    // A server with one NIC (GAON_LOCAL ports): instances lay out their state for writers
    // in the kernel, and each fast path's other programs are attached (fast_path.h): tc at
    // the egress of `local_ifindexes`, sock_ops and cgroup_skb on `cgroup` (a cgroup v2
    // directory; empty: not attached, as in the tests).
    bool local = false;
    std::vector<uint32_t> local_ifindexes;
    std::string cgroup;
  };
  static Result<std::unique_ptr<XdpProgram>> load(const Options& opt);
  ~XdpProgram();

  int prog_fd() const { return prog_fd_; }

  // The steering program on an interface, in native or generic (skb) mode. Through
  // libxdp's multi-program dispatcher when it can (`xdp-loader status` lists gaon_steer,
  // other libxdp programs such as xdp-filter run beside it; priority GAON_XDP_RUN_PRIO): an
  // earlier gaond's gaon_steer there is replaced, nothing else is touched. When the
  // dispatcher cannot be used (no freplace in the kernel, no bpffs, a program there that
  // libxdp did not load), attached directly with bpf_xdp_attach, replacing what is there,
  // as before libxdp was used; direct_why() says why. Returns 0 or a negative errno.
  int attach(int ifindex, bool generic);
  // Only gaon's program leaves the interface (others in the dispatcher stay). Not called,
  // a program stays attached after gaond exits (the bump: fail-open).
  void detach(int ifindex);
  // "libxdp dispatcher", or "direct" and why (for the startup line and stats).
  std::string attach_description() const;
  nlohmann::json attach_stats() const;
  static std::string attach_error();  // why the last attach failed, when it says more
  int map_fd(const char* name) const;
  gaon_lease* lease() const { return lease_; }
  // gaond's side of the lease (xdp_abi.h). start_lease before the program is attached
  // (0: no lease); renew_lease at every poll of the datapath thread: one that finds it
  // lapsed (traffic went around gaond) renews only at the next poll, once the engine has
  // seen the gap (lease_lapses, a port's gaps()) and its instances dropped what they knew,
  // so no fast path serves state from before the lapse.
  void start_lease(uint64_t bound_ns);
  void renew_lease();
  uint64_t lease_lapses() const { return lapses_.get(); }
  uint64_t lease_ns() const { return lease_ns_; }

  // The map keys, as the programs see them.
  static gaon_flow flow_key(const FlowKey& k);

  Result<void> set_port(uint32_t ifindex, gaon_role role, uint32_t peer_slot);
  void remove_port(uint32_t ifindex);  // its frames are the host stack's again
  Result<void> set_peer(uint32_t slot, uint32_t ifindex);
  Result<void> set_xsk(gaon_role role, uint32_t queue, int fd);  // that queue's socket

  // A flow of `instance` to steer. With a fast path (`fp`), the instance gets a slot and
  // fp.bytes of fast-path memory with its first flow (kept until instance_removed), and
  // the type's program is loaded with the first instance that needs it. No memory left, or
  // a program the kernel refuses: the flow is steered to gaond alone, the reason kept in
  // fast_path_stats. Several instances on one local address: all of it to gaond.
  Result<void> add_flow(const FlowKey& key, uint32_t instance, const FastPathSpec& fp);
  void remove_flow(const FlowKey& key);
  FastPathState* fast_path(uint32_t instance);
  void instance_removed(uint32_t instance);

  // A fast path's program by name (its object loaded with a first instance), or -1: the
  // tests run them with BPF_PROG_TEST_RUN.
  int fast_path_program_fd(const std::string& name) const;
  nlohmann::json stats() const;                       // the steering program's counters
  nlohmann::json fast_path_stats(uint32_t instance);  // null: the instance has none
  size_t flows() const;
  uint32_t fp_chunks_free() const;

 private:
  XdpProgram() = default;
  Result<void> load_fast_path(const FastPathSpec& fp);
  struct Instance {
    FastPathState state;
    uint32_t first_chunk = 0, chunks = 0;
    std::string why_none;  // when it runs without its fast path
  };
  struct FlowRef {
    int refs = 0;
    uint32_t value = 0;
  };
  mutable std::mutex mu_;  // control threads, and stats from any thread
  bpf_object* obj_ = nullptr;
  std::vector<bpf_object*> fp_objs_;
  Options opt_;
  std::vector<bpf_link*> links_;  // one NIC: sock_ops and cgroup_skb on the cgroup
  struct TcHook {
    uint32_t ifindex;
    int prog_fd;
  };
  std::vector<TcHook> tc_;  // one NIC: tc egress programs attached (detached at the end)
  Result<void> attach_local(bpf_object* o, const std::string& name);
  std::map<uint32_t, std::string> fp_loaded_;  // prog -> "" or why it failed
  int prog_fd_ = -1;
  struct Attached {
    int ifindex = 0;
    bool generic = false;
    xdp_program* libxdp = nullptr;  // null: attached directly
    bpf_object* obj = nullptr;      // its copy of the program, over the maps of obj_
  };
  std::vector<Attached> attached_;
  std::string direct_why_;  // the last reason the dispatcher was not used
  int ports_ = -1, xsks_ = -1, peers_ = -1, flows_ = -1, stats_ = -1, fp_progs_ = -1,
      fp_slots_ = -1, fp_stats_ = -1;
  gaon_port ports_at_[GAON_MAX_PORTS] = {};  // gaon_ports as written (probing, xdp_abi.h)
  gaon_lease* lease_ = nullptr;
  uint64_t lease_ns_ = 0, renewed_ns_ = 0;  // renewed_ns_: at the last poll (0: none yet)
  bool resume_next_ = false;                // a lapse was found: renew at the next poll
  Counter lapses_;
  uint8_t* fp_mem_ = nullptr;
  size_t fp_mem_bytes_ = 0;
  uint32_t fp_chunks_ = 0;
  std::vector<uint32_t> chunk_owner_;               // slot owning each chunk (0: free)
  std::vector<uint64_t> chunk_freed_, slot_freed_;  // when given up (mono ns; 0: never)
  std::map<uint32_t, Instance> instances_;          // by instance id
  std::vector<uint32_t> slot_instance_;             // fp slot -> instance + 1 (0: free)
  std::map<std::string, FlowRef> flow_refs_;        // by gaon_flow bytes
};

}  // namespace gaon

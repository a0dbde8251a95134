// A server with one NIC (gaond --local): gaon's programs on the application's own
// interfaces, no bump and no gaond in the data path.
//
//   Host::open({.ifaces = {"eth0"}}) loads gaon's XDP steering program with the fast paths
//     in their one-NIC form (XdpProgram::Options::local) onto each interface (GAON_LOCAL:
//     frames of attached flows are addressed to this host; everything the programs do not
//     answer passes to the host stack, XDP_PASS). An instance's type must have a fast path
//     (kvcache: GET hits answered in XDP, writes invalidated in the kernel, values learned
//     at tc egress, TCP connections read in stream order at cgroup_skb ingress; docs/one-nic.md).
//   gaond keeps each instance's state, serves the control socket and renews the lease
//     (the wire port's rx, polled by the engine as in a bump): when gaond stalls or is
//     gone, the fast paths answer nothing and every frame passes to the stack (fail-safe
//     and fail-open). A lapse is a gap (Port::gaps): instances drop what they know before
//     the lease is renewed.
//   The engine's two ports carry no frames here: rx is always empty, tx frees.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gaon/engine.h"
#include "gaon/fd_waiter.h"
#include "gaon/pool.h"
#include "gaon/port.h"
#include "gaon/result.h"
#include "gaon/xdp_abi.h"

namespace gaon::local {

class Host;

// One of the engine's ports on a one-NIC host: no frames. The wire's rx renews the lease.
class NoFramePort final : public Port {
 public:
  uint32_t rx_burst(std::span<Packet*> out) override;
  uint32_t tx_burst(std::span<Packet*> pkts) override;
  uint64_t gaps() const override;
  std::string name() const override { return name_; }

 private:
  friend class Host;
  NoFramePort(Host& h, BufferPool& pool, std::string name, bool wire)
      : host_(h), pool_(pool), name_(std::move(name)), wire_(wire) {}
  Host& host_;
  BufferPool& pool_;
  std::string name_;
  bool wire_;
};

class Host final : public FlowObserver {
 public:
  struct Options {
    std::vector<std::string> ifaces;  // empty: default_ifaces()
    std::string bpf_object;           // steer.bpf.o; empty: the one built in
    std::string xdp_mode = "auto";    // auto: native, generic on veth or without native XDP
    uint64_t lease_ns = 50'000'000;   // as a bump's (afxdp.h); 0: none
    uint32_t fp_chunks = GAON_FP_CHUNKS_DEFAULT;
    // The cgroup (v2) whose sockets sock_ops watches; empty: the v2 root, every process
    std::string cgroup;
  };
  static Result<std::unique_ptr<Host>> open(const Options& opt, BufferPool& pool);
  ~Host() override;  // detaches everything: the host's traffic is as before

  // The interfaces that are up, not loopback, and hold an address (the ones the
  // application's sockets can be reached through).
  static std::vector<std::string> default_ifaces();

  Port& wire() { return *wire_; }
  Port& host() { return *host_; }

  // FlowObserver (xdp_program.h). A type without a fast path cannot run here: refused. A
  // TCP flow with connections already established is refused too (sock_ops sees only the
  // connections accepted from now on: earlier ones' writes would go unseen).
  Result<void> flow_added(const FlowKey& key, uint32_t instance, const FastPathSpec& fp) override;
  void flow_removed(const FlowKey& key) override;
  FastPathState* fast_path(uint32_t instance) override;
  nlohmann::json fast_path_stats(uint32_t instance) override;
  void instance_removed(uint32_t instance) override;

  void wait(int timeout_ms) { waiter_.wait(timeout_ms); }
  void wake() { waiter_.wake(); }

  nlohmann::json stats() const;
  std::string describe() const;

 private:
  friend class NoFramePort;
  struct Impl;
  Host();
  void renew_lease();
  std::unique_ptr<Impl> impl_;
  std::unique_ptr<NoFramePort> wire_, host_;
  FdWaiter waiter_;
};

// Established TCP connections whose local end is `key`'s address and port (any address
// when the key's is unspecified), from /proc/net/tcp and tcp6.
size_t established_connections(const FlowKey& key);

}  // namespace gaon::local

// AF_XDP bump-in-the-wire: gaond between a wire interface (clients) and a host interface
// (the application), both keeping their addresses.
//
//   Bump::open(wire, host, pool)  loads gaon's XDP steering program (src/bpf/steer.bpf.c)
//     onto both interfaces (native XDP; generic if the driver has none, or between veths,
//     where it costs less), and opens an
//     AF_XDP socket on every receive queue of each interface (a socket only takes its own
//     queue's frames) over a single UMEM: the engine's buffer pool, so a frame received on
//     one side is transmitted on the other without a copy in gaond. The queues' fast paths
//     run on their own CPUs; gaond polls every socket in its one datapath thread, and
//     transmits on queue 0's.
//   The program sends gaond only the frames of attached flows (Bump is the engine's
//     FlowObserver and keeps the program's flow map in step with the engine's flows) and
//     forwards everything else to the other interface in the kernel (devmap). When gaond
//     is gone, its sockets leave the program's XSKMAP and every frame is forwarded:
//     fail-open. The program stays attached when gaond exits (that is what keeps the
//     traffic flowing); `ip link set dev IF xdp off` (`xdpgeneric off` in generic mode)
//     removes it.
//   XskPort: rx takes descriptors from each queue's rx ring into the pool's Packets (no
//     copy), round-robin over the queues, and keeps their fill rings full; tx puts frames on the tx
//     ring, kicks the kernel whenever transmits are outstanding (copy mode sends ~32 per kick) and
//     frees frames when the completion ring returns them. Syscalls are per burst, never per packet.
//   Fast paths (fast_path.h): an instance whose type has one gets fast-path memory with
//     its first flow, and the program runs the type's XDP code on its frames first.
// Zero-copy when the driver offers it, copy mode otherwise; the modes are in stats().
// IPv4 and IPv6 flows (xdp_program.h).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gaon/engine.h"
#include "gaon/fd_waiter.h"
#include "gaon/pool.h"
#include "gaon/port.h"
#include "gaon/result.h"
#include "gaon/xdp_abi.h"

namespace gaon::afxdp {

// "afxdp:IFACE" (every receive queue) or "afxdp:IFACE@QUEUE" (that queue, which must then
// be the interface's only one: frames on another would never reach gaond).
struct Spec {
  std::string ifname;
  std::optional<uint32_t> queue;
};
Result<Spec> parse_spec(std::string_view text);

class Bump;

class XskPort final : public Port {
 public:
  ~XskPort() override;
  uint32_t rx_burst(std::span<Packet*> out) override;  // the wire's renews the lease
  uint64_t gaps() const override;
  uint32_t tx_burst(std::span<Packet*> pkts) override;
  bool rx_drained() const override { return drained_; }
  std::string name() const override;
  nlohmann::json stats() const override;
  int fd() const;  // queue 0's socket
  uint32_t queues() const { return uint32_t(q_.size()); }

 private:
  friend class Bump;
  struct Rings;
  XskPort(Bump& bump, std::string ifname, uint32_t first_queue, uint32_t queues);
  void refill(Rings& r);
  void complete();
  void kick_tx();

  Bump& bump_;
  std::string ifname_;
  std::vector<std::unique_ptr<Rings>> q_;  // one per receive queue; q_[0] also transmits
  uint32_t next_ = 0;                      // the queue the next rx_burst starts at
  bool drained_ = false;
  uint32_t outstanding_ = 0;  // frames on the tx ring not yet completed
  uint64_t rx_ = 0, tx_ = 0, rx_kicks_ = 0, tx_kicks_ = 0, fill_short_ = 0, tx_full_ = 0;
};

class Bump final : public FlowObserver {
 public:
  struct Options {
    uint32_t ring_size = 2048;  // rx, tx, fill and completion rings, per socket
    std::string bpf_object;     // path of steer.bpf.o; empty: the one built in
    // auto: native, or generic when the driver has no native XDP or both are veths
    std::string xdp_mode = "auto";
    // gaond's lease on the program (gaon/xdp_abi.h): attached flows go around gaond once it
    // has not polled for this long. 0: no lease (only a gaond that is gone is bypassed).
    uint64_t lease_ns = 50'000'000;
    uint32_t fp_chunks = GAON_FP_CHUNKS_DEFAULT;  // fast-path memory, MiB
  };
  static Result<std::unique_ptr<Bump>> open(const Spec& wire, const Spec& host, BufferPool& pool,
                                            const Options& opt);
  static Result<std::unique_ptr<Bump>> open(const Spec& wire, const Spec& host, BufferPool& pool) {
    return open(wire, host, pool, Options{});
  }
  ~Bump() override;

  Port& wire() { return *wire_; }
  Port& host() { return *host_; }

  // FlowObserver: the program's flow map (local address and port of each flow), and
  // fast-path memory for each instance whose type has a fast path (xdp_program.h).
  Result<void> flow_added(const FlowKey& key, uint32_t instance, const FastPathSpec& fp) override;
  void flow_removed(const FlowKey& key) override;
  FastPathState* fast_path(uint32_t instance) override;
  nlohmann::json fast_path_stats(uint32_t instance) override;
  void instance_removed(uint32_t instance) override;

  // Blocks up to timeout_ms until a socket has frames (or wake() is called).
  void wait(int timeout_ms) { waiter_.wait(timeout_ms); }
  void wake() { waiter_.wake(); }

  // Modes (zero-copy or copy, native or generic XDP), the program's counters, the ports.
  nlohmann::json stats() const;
  std::string describe() const;  // one line for the log

 private:
  friend class XskPort;
  struct Impl;
  Bump();
  void renew_lease();
  std::unique_ptr<Impl> impl_;
  BufferPool* pool_ = nullptr;
  std::unique_ptr<XskPort> wire_, host_;
  FdWaiter waiter_;
};

}  // namespace gaon::afxdp

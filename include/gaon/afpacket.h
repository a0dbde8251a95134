// AF_PACKET port: the bump-in-the-wire fallback where AF_XDP is unavailable.
//
//   afpacket:IFACE  one packet socket bound to the interface.
//     rx: a TPACKET_V2 ring shared with the kernel (no syscall while frames are waiting);
//       each frame is copied into a pool Packet (a VLAN tag the kernel took off is put
//       back) and its slot handed back at once.
//     tx: one sendmmsg per burst, bypassing the qdisc; frames we send are not received
//       back (PACKET_IGNORE_OUTGOING).
// Unlike AF_XDP there is no steering in the kernel: gaond sees every frame of the
// interface and passes what no instance takes to the other side, and when gaond stops
// nothing forwards (no fail-open). The interface must not be a bridge port (the bridge
// would forward every frame a second time) and must have no XDP program (it would take
// the frames before the packet socket sees them); open() refuses both with the reason.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "gaon/pool.h"
#include "gaon/port.h"
#include "gaon/result.h"

namespace gaon::afpacket {

// "afpacket:IFACE" → the interface name.
Result<std::string> parse_spec(std::string_view text);

class AfPacketPort final : public Port {
 public:
  static Result<std::unique_ptr<AfPacketPort>> open(const std::string& ifname, BufferPool& pool,
                                                    uint32_t ring_frames = 4096);
  ~AfPacketPort() override;
  uint32_t rx_burst(std::span<Packet*> out) override;
  uint32_t tx_burst(std::span<Packet*> pkts) override;
  bool rx_drained() const override { return drained_; }
  std::string name() const override { return "afpacket:" + ifname_; }
  nlohmann::json stats() const override;
  int fd() const { return fd_; }

 private:
  AfPacketPort(std::string ifname, BufferPool& pool) : ifname_(std::move(ifname)), pool_(pool) {}
  std::string ifname_;
  BufferPool& pool_;
  int fd_ = -1;
  int ifindex_ = 0;
  uint8_t* ring_ = nullptr;
  size_t ring_bytes_ = 0;
  uint32_t frames_ = 0, frame_size_ = 0, next_ = 0;
  bool drained_ = false;
  uint64_t rx_ = 0, tx_ = 0, rx_truncated_ = 0, pool_empty_ = 0, tx_errors_ = 0, tx_calls_ = 0;
};

}  // namespace gaon::afpacket

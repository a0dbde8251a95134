// Packet: a view of one frame in a pooled, fixed-size buffer, plus metadata.
//
// A frame is kFrameSize bytes; the packet's data starts kHeadroom bytes in so a header
// can be prepended without a copy. Parsed header offsets are filled once by parse()
// (see parse.h) and are relative to data(). Nothing here allocates.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

namespace gaon {

inline constexpr uint32_t kFrameSize = 2048;
inline constexpr uint32_t kHeadroom = 256;  // same as XDP_PACKET_HEADROOM
inline constexpr uint32_t kMaxData = kFrameSize - kHeadroom;
inline constexpr size_t kBurst = 32;  // the unit of work on the datapath

enum class Verdict : uint8_t {
  to_host,  // pass on towards the application (ingress) — the default
  to_wire,  // transmit on the wire (a reply, or egress traffic)
  drop,     // free the frame, counted as dropped
};

enum class Direction : uint8_t {
  ingress,  // wire -> host
  egress,   // host -> wire
};

enum class L3 : uint8_t { none, ipv4, ipv6 };
enum class L4 : uint8_t { none, udp, tcp };

// Offsets into the frame, relative to data(). Valid only when parsed.
struct HeaderOffsets {
  uint16_t l3 = 0;       // IPv4/IPv6 header
  uint16_t l4 = 0;       // UDP/TCP header
  uint16_t payload = 0;  // first byte after the L4 header
  uint16_t payload_len = 0;
  L3 l3_proto = L3::none;
  L4 l4_proto = L4::none;
  bool vlan = false;
  bool l4_csum_partial = false;  // L4 checksum left to offload (veth/loopback): not verified
};

inline constexpr uint32_t kNoInstance = 0;
// Packet::port of frames the engine received.
inline constexpr uint16_t kWirePort = 0;
inline constexpr uint16_t kHostPort = 1;

struct Packet {
  // --- buffer (owned by the pool) ---
  uint8_t* frame = nullptr;  // start of the kFrameSize buffer
  uint32_t index = 0;        // index in the pool
  uint16_t data_off = kHeadroom;
  uint16_t len = 0;

  // --- metadata ---
  uint16_t port = 0;
  Direction dir = Direction::ingress;
  Verdict verdict = Verdict::to_host;
  bool parsed = false;  // hdr is valid: a well-formed IPv4/IPv6 UDP/TCP packet
  uint32_t flow_id = 0;
  uint32_t instance = kNoInstance;  // slot of the instance the packet was steered to
  uint64_t timestamp_ns = 0;
  // Non-zero: the frame holds only the head of a datagram larger than a frame (sidecar
  // ports); the port that received it keeps the rest under this ticket and sends the
  // datagram whole, byte for byte. The engine never hands such a frame to process(): the
  // instance sees it in IKernel::on_oversize, which may only pass or drop it.
  uint32_t oversize = 0;
  uint32_t oversize_len = 0;  // and the whole datagram's payload length
  HeaderOffsets hdr;

  uint8_t* data() { return frame + data_off; }
  const uint8_t* data() const { return frame + data_off; }
  std::span<uint8_t> bytes() { return {data(), len}; }
  std::span<const uint8_t> bytes() const { return {data(), len}; }
  uint32_t headroom() const { return data_off; }
  uint32_t tailroom() const { return kFrameSize - data_off - len; }

  uint8_t* l3() { return data() + hdr.l3; }
  uint8_t* l4() { return data() + hdr.l4; }
  uint8_t* payload() { return data() + hdr.payload; }
  const uint8_t* payload() const { return data() + hdr.payload; }
  std::span<uint8_t> payload_bytes() { return {payload(), hdr.payload_len}; }
  bool is_udp() const { return parsed && hdr.l4_proto == L4::udp; }
  bool is_tcp() const { return parsed && hdr.l4_proto == L4::tcp; }

  // DPDK-style buffer adjustments; each returns nullptr (and changes nothing) when the
  // request does not fit.
  uint8_t* prepend(uint32_t n) {  // grow at the front
    if (n > data_off) return nullptr;
    data_off -= n;
    len += n;
    return data();
  }
  uint8_t* adj(uint32_t n) {  // remove from the front
    if (n > len) return nullptr;
    data_off += n;
    len -= n;
    return data();
  }
  uint8_t* append(uint32_t n) {  // grow at the end; returns the first new byte
    if (n > tailroom()) return nullptr;
    uint8_t* p = data() + len;
    len += n;
    return p;
  }
  bool trim(uint32_t n) {  // remove from the end
    if (n > len) return false;
    len -= n;
    return true;
  }
  // Replace the contents with a copy of `src` (at the default headroom).
  bool assign(std::span<const uint8_t> src) {
    if (src.size() > kMaxData) return false;
    data_off = kHeadroom;
    len = static_cast<uint16_t>(src.size());
    if (!src.empty()) std::memcpy(data(), src.data(), src.size());
    parsed = false;
    return true;
  }

  // Reset metadata for reuse (the pool does this on alloc).
  void reset() {
    data_off = kHeadroom;
    len = 0;
    port = 0;
    dir = Direction::ingress;
    verdict = Verdict::to_host;
    parsed = false;
    flow_id = 0;
    instance = kNoInstance;
    timestamp_ns = 0;
    oversize = oversize_len = 0;
    hdr = {};
  }
};

}  // namespace gaon

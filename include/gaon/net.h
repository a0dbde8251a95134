// Wire formats: Ethernet, 802.1Q, IPv4, IPv6, UDP, TCP, and byte-order helpers.
// All multi-byte fields are in network byte order; use load16/store16 etc.
#pragma once

#include <cstdint>
#include <cstring>

namespace gaon::net {

inline constexpr uint16_t kEthIPv4 = 0x0800;
inline constexpr uint16_t kEthIPv6 = 0x86DD;
inline constexpr uint16_t kEthVlan = 0x8100;
inline constexpr uint16_t kEthArp = 0x0806;
inline constexpr uint8_t kProtoTcp = 6;
inline constexpr uint8_t kProtoUdp = 17;

inline constexpr uint32_t kEthHdr = 14;
inline constexpr uint32_t kVlanHdr = 4;
inline constexpr uint32_t kIPv4Hdr = 20;  // without options
inline constexpr uint32_t kIPv6Hdr = 40;
inline constexpr uint32_t kUdpHdr = 8;
inline constexpr uint32_t kTcpHdr = 20;  // without options

inline uint16_t load16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
inline uint32_t load32(const uint8_t* p) {
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3];
}
inline void store16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
inline void store32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

// Field offsets inside each header.
namespace eth {
inline constexpr uint32_t dst = 0, src = 6, type = 12;
}
namespace ip4 {
inline constexpr uint32_t ver_ihl = 0, tos = 1, total_len = 2, id = 4, frag = 6, ttl = 8, proto = 9,
                          csum = 10, src = 12, dst = 16;
inline constexpr uint16_t kMoreFragments = 0x2000, kOffsetMask = 0x1fff;
}  // namespace ip4
namespace ip6 {
inline constexpr uint32_t payload_len = 4, next = 6, hop = 7, src = 8, dst = 24;
}
namespace udp {
inline constexpr uint32_t sport = 0, dport = 2, len = 4, csum = 6;
}
namespace tcp {
inline constexpr uint32_t sport = 0, dport = 2, seq = 4, ack = 8, off = 12, flags = 13, csum = 16;
}

}  // namespace gaon::net

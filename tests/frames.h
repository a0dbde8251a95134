// Test fixtures: build Ethernet/IPv4/IPv6/UDP/TCP frames byte by byte, with checksums
// computed by a deliberately naive reference implementation (independent of the
// library's), and check frames the same way.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "gaon/packet.h"
#include "gaon/pool.h"

namespace gaon::test {

using Bytes = std::vector<uint8_t>;

enum class L4Csum { full, zero, partial, bad };

struct FrameSpec {
  uint8_t dst_mac[6] = {0x02, 0, 0, 0, 0, 0x02};
  uint8_t src_mac[6] = {0x02, 0, 0, 0, 0, 0x01};
  std::optional<uint16_t> vlan;  // 802.1Q tag (TCI)
  int ip_version = 4;
  std::string src_ip = "10.0.0.1";
  std::string dst_ip = "10.0.0.2";
  uint8_t proto = 17;  // 17 UDP, 6 TCP, anything else: raw payload after IP
  uint16_t sport = 40000;
  uint16_t dport = 7;
  uint32_t tcp_seq = 0x1000;
  uint8_t tcp_flags = 0x18;  // PSH ACK (SYN 0x02, FIN 0x01, RST 0x04)
  Bytes payload;
  Bytes ip_options;  // IPv4 only, multiple of 4
  uint8_t ttl = 64;
  uint16_t frag = 0;  // IPv4 flags + fragment offset field
  L4Csum l4csum = L4Csum::full;
  size_t pad_to = 0;  // Ethernet padding up to this frame length
};

Bytes build_frame(const FrameSpec& s);
Bytes text(const std::string& s);

// Reference one's-complement checksum over `data` (naive, 16 bits at a time).
uint16_t ref_checksum(const uint8_t* data, size_t len, uint32_t initial = 0);
// True when the frame's IPv4 header checksum verifies (IPv6: true).
bool ref_ip_ok(const Bytes& frame);
// True when the frame's UDP/TCP checksum verifies (UDP/IPv4 zero counts as valid).
bool ref_l4_ok(const Bytes& frame);

// memcached over UDP: `body` behind the 8-byte frame header (request id, sequence 0,
// `total` datagrams, reserved 0).
std::string mc_dgram(const std::string& body, uint16_t req_id, uint16_t total = 1);
// A binary-protocol request: 24-byte header (magic 0x80, `op`, the key's length, `extras`,
// body length, `opaque`), then extras, key and value.
std::string mc_binreq(uint8_t op, const std::string& key, const std::string& extras = "",
                      const std::string& value = "", uint32_t opaque = 0x11223344);

// Copies `bytes` into a fresh packet from `pool` (nullptr if empty).
Packet* make_packet(BufferPool& pool, const Bytes& bytes);
inline Bytes bytes_of(const Packet& p) { return Bytes(p.data(), p.data() + p.len); }

}  // namespace gaon::test

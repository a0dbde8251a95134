// Internet checksums (RFC 1071) and incremental updates (RFC 1624).
#pragma once

#include <cstddef>
#include <cstdint>

#include "gaon/packet.h"

namespace gaon::csum {

// One's-complement sum of `len` bytes, added to `sum` (not folded, not complemented).
uint64_t partial(const uint8_t* data, size_t len, uint64_t sum = 0);

inline uint16_t fold(uint64_t sum) {
  sum = (sum & 0xffffffff) + (sum >> 32);
  sum = (sum & 0xffffffff) + (sum >> 32);
  sum = (sum & 0xffff) + (sum >> 16);
  sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(sum);
}

// The checksum of an IPv4 header of `ihl_bytes` (the value that belongs in the field when
// the field itself is taken as zero; 0 when verifying a header with the field in place
// means valid).
inline uint16_t ipv4_header(const uint8_t* ip, size_t ihl_bytes) {
  return static_cast<uint16_t>(~fold(partial(ip, ihl_bytes)));
}

// Pseudo-header sum for UDP/TCP over IPv4 or IPv6 (`ip` points at the IP header).
uint64_t pseudo_ipv4(const uint8_t* ip, uint8_t proto, uint32_t l4_len);
uint64_t pseudo_ipv6(const uint8_t* ip, uint8_t proto, uint32_t l4_len);

// RFC 1624 eqn. 3: the checksum field `old_csum` after a 16-bit word changed from
// `old_word` to `new_word` (all in host order).
inline uint16_t update16(uint16_t old_csum, uint16_t old_word, uint16_t new_word) {
  uint32_t s = static_cast<uint16_t>(~old_csum) + static_cast<uint16_t>(~old_word) + new_word;
  s = (s & 0xffff) + (s >> 16);
  s = (s & 0xffff) + (s >> 16);
  return static_cast<uint16_t>(~s);
}

// Full L4 (UDP or TCP) checksum for a parsed packet, as it belongs in the field.
// For UDP a computed 0 is returned as 0xffff (RFC 768).
uint16_t l4_full(Packet& p);

// Verifies the L4 checksum of a parsed packet; UDP over IPv4 with checksum 0 is valid.
bool l4_valid(Packet& p);

}  // namespace gaon::csum

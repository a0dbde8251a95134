// Helpers to turn a received packet into a reply in place (DPDK-style: no copy).
//
//   reply::swap_addresses(p);             // MACs, IPs, L4 ports
//   reply::set_payload_len(p, n);         // frame, IP and UDP lengths + IPv4 header csum
//   reply::finish_udp(p);                 // UDP checksum, from scratch or kept valid
//
// All of them need a parsed packet (p.parsed). Swapping addresses leaves every checksum
// valid (the sums are order-independent), so an echo costs no checksum work unless the
// request's L4 checksum was left to offload (hdr.l4_csum_partial), in which case
// finish_udp computes it.
#pragma once

#include <cstdint>

#include "gaon/packet.h"

namespace gaon::reply {

void swap_l2(Packet& p);
void swap_l3(Packet& p);
void swap_l4_ports(Packet& p);
inline void swap_addresses(Packet& p) {
  swap_l2(p);
  swap_l3(p);
  swap_l4_ports(p);
}

// Resizes the UDP payload to `n` bytes (growing into tailroom or shrinking), updating
// the frame length, the IPv4 total length and header checksum (incrementally) or the IPv6
// payload length, and the UDP length. The UDP checksum is left stale: call finish_udp.
// Returns false (and changes nothing) when `n` does not fit the frame.
bool set_payload_len(Packet& p, uint32_t n);

enum class UdpChecksum : uint8_t {
  full,  // compute over the whole datagram (always for IPv6)
  none,  // IPv4 only: 0 = "no checksum" (RFC 768); falls back to full for IPv6
};

// Makes the UDP checksum of `p` correct for its current contents.
void finish_udp(Packet& p, UdpChecksum mode = UdpChecksum::full);

// Sets the IPv4 TTL (or IPv6 hop limit), updating the IPv4 header checksum incrementally.
void set_ttl(Packet& p, uint8_t ttl);

}  // namespace gaon::reply

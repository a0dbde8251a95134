#include "gaon/reply.h"

#include <algorithm>
#include <cstring>

#include "gaon/checksum.h"
#include "gaon/net.h"

namespace gaon::reply {

using namespace net;

template <size_t N>
static void swap_bytes(uint8_t* a, uint8_t* b) {
  uint8_t t[N];
  std::memcpy(t, a, N);
  std::memcpy(a, b, N);
  std::memcpy(b, t, N);
}

void swap_l2(Packet& p) { swap_bytes<6>(p.data() + eth::dst, p.data() + eth::src); }

void swap_l3(Packet& p) {
  uint8_t* ip = p.l3();
  if (p.hdr.l3_proto == L3::ipv4)
    swap_bytes<4>(ip + ip4::src, ip + ip4::dst);
  else if (p.hdr.l3_proto == L3::ipv6)
    swap_bytes<16>(ip + ip6::src, ip + ip6::dst);
}

void swap_l4_ports(Packet& p) { swap_bytes<2>(p.l4(), p.l4() + 2); }

bool set_payload_len(Packet& p, uint32_t n) {
  if (p.hdr.l4_proto != L4::udp) return false;
  // 64-bit arithmetic: a huge n must not wrap around the checks.
  const uint64_t new_len = uint64_t{p.hdr.payload} + n;
  if (p.data_off + new_len > kFrameSize) return false;
  const uint64_t udp_len = uint64_t{kUdpHdr} + n;
  if (udp_len > 0xffff) return false;
  uint8_t* ip = p.l3();
  if (p.hdr.l3_proto == L3::ipv4) {
    const uint32_t ihl = p.hdr.l4 - p.hdr.l3;
    const uint16_t old_total = load16(ip + ip4::total_len);
    const uint16_t total = static_cast<uint16_t>(ihl + udp_len);
    store16(ip + ip4::total_len, total);
    store16(ip + ip4::csum, csum::update16(load16(ip + ip4::csum), old_total, total));
  } else {
    store16(ip + ip6::payload_len, static_cast<uint16_t>(udp_len));
  }
  store16(p.l4() + udp::len, static_cast<uint16_t>(udp_len));
  p.len = static_cast<uint16_t>(new_len);  // drops any Ethernet padding
  p.hdr.payload_len = static_cast<uint16_t>(n);
  return true;
}

void finish_udp(Packet& p, UdpChecksum mode) {
  uint8_t* field = p.l4() + udp::csum;
  if (mode == UdpChecksum::none && p.hdr.l3_proto == L3::ipv4) {
    store16(field, 0);
  } else {
    store16(field, csum::l4_full(p));
  }
  p.hdr.l4_csum_partial = false;
}

void set_ttl(Packet& p, uint8_t ttl) {
  uint8_t* ip = p.l3();
  if (p.hdr.l3_proto == L3::ipv4) {
    const uint16_t old_word = load16(ip + ip4::ttl);
    ip[ip4::ttl] = ttl;
    store16(ip + ip4::csum,
            csum::update16(load16(ip + ip4::csum), old_word, load16(ip + ip4::ttl)));
  } else if (p.hdr.l3_proto == L3::ipv6) {
    ip[ip6::hop] = ttl;
  }
}

}  // namespace gaon::reply

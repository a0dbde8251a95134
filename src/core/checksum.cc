#include "gaon/checksum.h"

#include <cstring>

#include "gaon/net.h"

namespace gaon::csum {

uint64_t partial(const uint8_t* data, size_t len, uint64_t sum) {
  // Sum 32-bit big-endian-agnostic words into a 64-bit accumulator; the one's-complement
  // sum is byte-order independent as long as the final fold is read in the same order.
  // We sum 16-bit words in network order to keep the result in host order.
  while (len >= 8) {
    uint64_t w;
    std::memcpy(&w, data, 8);
    // add the four 16-bit network-order words
    uint64_t s = __builtin_bswap64(w);
    sum += (s >> 48) + ((s >> 32) & 0xffff) + ((s >> 16) & 0xffff) + (s & 0xffff);
    data += 8;
    len -= 8;
  }
  while (len >= 2) {
    sum += net::load16(data);
    data += 2;
    len -= 2;
  }
  if (len) sum += uint32_t{data[0]} << 8;
  return sum;
}

uint64_t pseudo_ipv4(const uint8_t* ip, uint8_t proto, uint32_t l4_len) {
  uint64_t s = partial(ip + net::ip4::src, 8);
  return s + proto + l4_len;
}

uint64_t pseudo_ipv6(const uint8_t* ip, uint8_t proto, uint32_t l4_len) {
  uint64_t s = partial(ip + net::ip6::src, 32);
  return s + proto + (l4_len >> 16) + (l4_len & 0xffff);
}

static uint64_t l4_sum(Packet& p, uint32_t l4_len) {
  const uint8_t proto = p.hdr.l4_proto == L4::udp ? net::kProtoUdp : net::kProtoTcp;
  uint64_t s = p.hdr.l3_proto == L3::ipv4 ? pseudo_ipv4(p.l3(), proto, l4_len)
                                          : pseudo_ipv6(p.l3(), proto, l4_len);
  return partial(p.l4(), l4_len, s);
}

static uint32_t l4_len(const Packet& p) { return p.hdr.payload + p.hdr.payload_len - p.hdr.l4; }

uint16_t l4_full(Packet& p) {
  const uint32_t len = l4_len(p);
  uint8_t* field = p.l4() + (p.hdr.l4_proto == L4::udp ? net::udp::csum : net::tcp::csum);
  const uint16_t saved = net::load16(field);
  net::store16(field, 0);
  uint16_t c = static_cast<uint16_t>(~fold(l4_sum(p, len)));
  net::store16(field, saved);
  if (c == 0 && p.hdr.l4_proto == L4::udp) c = 0xffff;
  return c;
}

bool l4_valid(Packet& p) {
  if (p.hdr.l4_proto == L4::udp && p.hdr.l3_proto == L3::ipv4 &&
      net::load16(p.l4() + net::udp::csum) == 0)
    return true;
  return fold(l4_sum(p, l4_len(p))) == 0xffff;
}

}  // namespace gaon::csum

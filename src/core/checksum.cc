#include "gaon/checksum.h"

#include <bit>
#include <cstring>

#include "gaon/net.h"

namespace gaon::csum {

uint64_t partial(const uint8_t* data, size_t len, uint64_t sum) {
  // RFC 1071 §2(B): the one's-complement sum is byte-order independent, so sum native
  // 32-bit halves of 64-bit loads (two accumulators), fold to 16 bits and swap once.
  uint64_t a = 0, b = 0;
  while (len >= 16) {
    uint64_t w0, w1;
    std::memcpy(&w0, data, 8);
    std::memcpy(&w1, data + 8, 8);
    a += (w0 & 0xffffffff) + (w0 >> 32);
    b += (w1 & 0xffffffff) + (w1 >> 32);
    data += 16;
    len -= 16;
  }
  // The tail, in even-aligned steps; a last odd byte is padded with zero, as the
  // checksum's definition pads it.
  if (len & 8) {
    uint64_t w;
    std::memcpy(&w, data, 8);
    a += (w & 0xffffffff) + (w >> 32);
    data += 8;
  }
  if (len & 4) {
    uint32_t w;
    std::memcpy(&w, data, 4);
    b += w;
    data += 4;
  }
  if (len & 2) {
    uint16_t w;
    std::memcpy(&w, data, 2);
    a += w;
    data += 2;
  }
  if (len & 1) a += std::endian::native == std::endian::little ? data[0] : uint32_t{data[0]} << 8;
  uint16_t native = fold(a + (b & 0xffffffff) + (b >> 32));
  if constexpr (std::endian::native == std::endian::little) native = __builtin_bswap16(native);
  return sum + native;
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

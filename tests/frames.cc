#include "frames.h"

#include <arpa/inet.h>

#include <cstring>
#include <stdexcept>

namespace gaon::test {

static void put16(Bytes& b, size_t off, uint16_t v) {
  b[off] = uint8_t(v >> 8);
  b[off + 1] = uint8_t(v);
}

uint16_t ref_checksum(const uint8_t* data, size_t len, uint32_t initial) {
  uint64_t sum = initial;
  for (size_t i = 0; i + 1 < len; i += 2) sum += (uint32_t(data[i]) << 8) | data[i + 1];
  if (len % 2) sum += uint32_t(data[len - 1]) << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return uint16_t(~sum);
}

Bytes text(const std::string& s) { return Bytes(s.begin(), s.end()); }

static uint32_t pseudo_sum(int ipv, const uint8_t* src, const uint8_t* dst, uint8_t proto,
                           uint32_t len) {
  uint32_t sum = 0;
  const size_t alen = ipv == 4 ? 4 : 16;
  for (size_t i = 0; i < alen; i += 2) {
    sum += (uint32_t(src[i]) << 8) | src[i + 1];
    sum += (uint32_t(dst[i]) << 8) | dst[i + 1];
  }
  sum += proto;
  sum += len >> 16;
  sum += len & 0xffff;
  return sum;
}

Bytes build_frame(const FrameSpec& s) {
  Bytes f;
  f.insert(f.end(), s.dst_mac, s.dst_mac + 6);
  f.insert(f.end(), s.src_mac, s.src_mac + 6);
  if (s.vlan) {
    f.push_back(0x81);
    f.push_back(0x00);
    f.push_back(uint8_t(*s.vlan >> 8));
    f.push_back(uint8_t(*s.vlan));
  }
  const uint16_t etype = s.ip_version == 4 ? 0x0800 : 0x86dd;
  f.push_back(uint8_t(etype >> 8));
  f.push_back(uint8_t(etype));
  const size_t l3 = f.size();

  // L4 segment
  Bytes seg;
  if (s.proto == 17) {
    seg.resize(8);
    put16(seg, 0, s.sport);
    put16(seg, 2, s.dport);
    put16(seg, 4, uint16_t(8 + s.payload.size()));
  } else if (s.proto == 6) {
    seg.resize(20);
    put16(seg, 0, s.sport);
    put16(seg, 2, s.dport);
    put16(seg, 4, uint16_t(s.tcp_seq >> 16));
    put16(seg, 6, uint16_t(s.tcp_seq));
    seg[12] = 5 << 4;
    seg[13] = s.tcp_flags;
    put16(seg, 14, 65535);
  }
  seg.insert(seg.end(), s.payload.begin(), s.payload.end());

  uint8_t src[16] = {}, dst[16] = {};
  const int af = s.ip_version == 4 ? AF_INET : AF_INET6;
  if (inet_pton(af, s.src_ip.c_str(), src) != 1 || inet_pton(af, s.dst_ip.c_str(), dst) != 1)
    throw std::runtime_error("bad test address");

  if (s.ip_version == 4) {
    const size_t ihl = 20 + s.ip_options.size();
    Bytes ip(ihl);
    ip[0] = uint8_t(0x40 | (ihl / 4));
    put16(ip, 2, uint16_t(ihl + seg.size()));
    put16(ip, 4, 0x1234);
    put16(ip, 6, s.frag);
    ip[8] = s.ttl;
    ip[9] = s.proto;
    std::memcpy(&ip[12], src, 4);
    std::memcpy(&ip[16], dst, 4);
    std::copy(s.ip_options.begin(), s.ip_options.end(), ip.begin() + 20);
    put16(ip, 10, ref_checksum(ip.data(), ip.size()));
    f.insert(f.end(), ip.begin(), ip.end());
  } else {
    Bytes ip(40);
    ip[0] = 0x60;
    put16(ip, 4, uint16_t(seg.size()));
    ip[6] = s.proto;
    ip[7] = s.ttl;
    std::memcpy(&ip[8], src, 16);
    std::memcpy(&ip[24], dst, 16);
    f.insert(f.end(), ip.begin(), ip.end());
  }
  if (s.proto == 17 || s.proto == 6) {
    const size_t coff = s.proto == 17 ? 6 : 16;
    const uint32_t ps = pseudo_sum(s.ip_version, src, dst, s.proto, uint32_t(seg.size()));
    switch (s.l4csum) {
      case L4Csum::full: {
        uint16_t c = ref_checksum(seg.data(), seg.size(), ps);
        if (c == 0 && s.proto == 17) c = 0xffff;
        put16(seg, coff, c);
        break;
      }
      case L4Csum::zero:
        put16(seg, coff, 0);
        break;
      case L4Csum::partial:  // what a local socket leaves for offload: folded pseudo sum
        put16(seg, coff, uint16_t(~ref_checksum(nullptr, 0, ps)));
        break;
      case L4Csum::bad: {
        uint16_t c = ref_checksum(seg.data(), seg.size(), ps);
        put16(seg, coff, uint16_t(c ^ 0x5a5a));
        break;
      }
    }
  }
  (void)l3;
  f.insert(f.end(), seg.begin(), seg.end());
  while (f.size() < s.pad_to) f.push_back(0);
  return f;
}

static size_t l3_offset(const Bytes& f, uint16_t& etype) {
  etype = uint16_t(f[12] << 8 | f[13]);
  size_t off = 14;
  if (etype == 0x8100) {
    etype = uint16_t(f[16] << 8 | f[17]);
    off = 18;
  }
  return off;
}

bool ref_ip_ok(const Bytes& f) {
  uint16_t et;
  const size_t l3 = l3_offset(f, et);
  if (et != 0x0800) return true;
  const size_t ihl = (f[l3] & 0xf) * 4;
  return ref_checksum(&f[l3], ihl) == 0;
}

bool ref_l4_ok(const Bytes& f) {
  uint16_t et;
  const size_t l3 = l3_offset(f, et);
  size_t l4, seglen;
  uint8_t proto;
  int ipv;
  const uint8_t *src, *dst;
  if (et == 0x0800) {
    const size_t ihl = (f[l3] & 0xf) * 4;
    l4 = l3 + ihl;
    seglen = size_t(f[l3 + 2] << 8 | f[l3 + 3]) - ihl;
    proto = f[l3 + 9];
    src = &f[l3 + 12];
    dst = &f[l3 + 16];
    ipv = 4;
  } else {
    l4 = l3 + 40;
    seglen = size_t(f[l3 + 4] << 8 | f[l3 + 5]);
    proto = f[l3 + 6];
    src = &f[l3 + 8];
    dst = &f[l3 + 24];
    ipv = 6;
  }
  if (proto == 17) {
    seglen = size_t(f[l4 + 4] << 8 | f[l4 + 5]);
    if (ipv == 4 && f[l4 + 6] == 0 && f[l4 + 7] == 0) return true;
  }
  return ref_checksum(&f[l4], seglen, pseudo_sum(ipv, src, dst, proto, uint32_t(seglen))) == 0;
}

std::string mc_dgram(const std::string& body, uint16_t req_id, uint16_t total) {
  std::string h(8, '\0');
  h[0] = char(req_id >> 8), h[1] = char(req_id);
  h[4] = char(total >> 8), h[5] = char(total);
  return h + body;
}

std::string mc_binreq(uint8_t op, const std::string& key, const std::string& extras,
                      const std::string& value, uint32_t opaque) {
  std::string h(24, '\0');
  h[0] = char(0x80);
  h[1] = char(op);
  h[2] = char(key.size() >> 8), h[3] = char(key.size());
  h[4] = char(extras.size());
  const uint32_t body = uint32_t(extras.size() + key.size() + value.size());
  for (int i = 0; i < 4; ++i) h[8 + i] = char(body >> (24 - 8 * i));
  for (int i = 0; i < 4; ++i) h[12 + i] = char(opaque >> (24 - 8 * i));
  return h + extras + key + value;
}

Packet* make_packet(BufferPool& pool, const Bytes& bytes) {
  Packet* p = pool.alloc();
  if (p != nullptr && !p->assign(bytes)) {
    pool.free(p);
    return nullptr;
  }
  return p;
}

}  // namespace gaon::test

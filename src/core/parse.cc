#include "gaon/parse.h"

#include "gaon/checksum.h"
#include "gaon/net.h"

namespace gaon {

std::string_view to_string(ParseResult r) {
  switch (r) {
    case ParseResult::ok:
      return "ok";
    case ParseResult::not_ip:
      return "not_ip";
    case ParseResult::not_udp_tcp:
      return "not_udp_tcp";
    case ParseResult::ipv6_ext_header:
      return "ipv6_ext_header";
    case ParseResult::truncated_eth:
      return "truncated_eth";
    case ParseResult::truncated_vlan:
      return "truncated_vlan";
    case ParseResult::truncated_ipv4:
      return "truncated_ipv4";
    case ParseResult::bad_ipv4_version:
      return "bad_ipv4_version";
    case ParseResult::bad_ipv4_ihl:
      return "bad_ipv4_ihl";
    case ParseResult::bad_ipv4_total_len:
      return "bad_ipv4_total_len";
    case ParseResult::bad_ipv4_checksum:
      return "bad_ipv4_checksum";
    case ParseResult::ipv4_fragment:
      return "ipv4_fragment";
    case ParseResult::truncated_ipv6:
      return "truncated_ipv6";
    case ParseResult::bad_ipv6_version:
      return "bad_ipv6_version";
    case ParseResult::bad_ipv6_payload_len:
      return "bad_ipv6_payload_len";
    case ParseResult::truncated_udp:
      return "truncated_udp";
    case ParseResult::bad_udp_len:
      return "bad_udp_len";
    case ParseResult::bad_udp_checksum:
      return "bad_udp_checksum";
    case ParseResult::truncated_tcp:
      return "truncated_tcp";
    case ParseResult::bad_tcp_offset:
      return "bad_tcp_offset";
    case ParseResult::bad_tcp_checksum:
      return "bad_tcp_checksum";
    case ParseResult::count_:
      break;
  }
  return "unknown";
}

static bool is_ipv6_ext(uint8_t next) {
  switch (next) {
    case 0:
    case 43:
    case 44:
    case 50:
    case 51:
    case 60:
    case 135:
    case 139:
    case 140:
      return true;
    default:
      return false;
  }
}

ParseResult parse(Packet& p, const ParseOptions& opt) {
  using namespace net;
  p.parsed = false;
  p.hdr = {};
  const uint8_t* d = p.data();
  const uint32_t len = p.len;
  if (len < kEthHdr) return ParseResult::truncated_eth;
  uint16_t type = load16(d + eth::type);
  uint32_t off = kEthHdr;
  if (type == kEthVlan) {
    if (len < kEthHdr + kVlanHdr) return ParseResult::truncated_vlan;
    type = load16(d + kEthHdr + 2);
    off += kVlanHdr;
    p.hdr.vlan = true;
  }

  uint8_t proto;
  uint32_t l4_off, l4_len;
  if (type == kEthIPv4) {
    if (len - off < kIPv4Hdr) return ParseResult::truncated_ipv4;
    const uint8_t* ip = d + off;
    if ((ip[0] >> 4) != 4) return ParseResult::bad_ipv4_version;
    const uint32_t ihl = (ip[0] & 0x0f) * 4u;
    if (ihl < kIPv4Hdr) return ParseResult::bad_ipv4_ihl;
    if (len - off < ihl) return ParseResult::truncated_ipv4;
    const uint32_t total = load16(ip + ip4::total_len);
    if (total < ihl || total > len - off) return ParseResult::bad_ipv4_total_len;
    if (csum::fold(csum::partial(ip, ihl)) != 0xffff) return ParseResult::bad_ipv4_checksum;
    if (load16(ip + ip4::frag) & (ip4::kMoreFragments | ip4::kOffsetMask))
      return ParseResult::ipv4_fragment;
    proto = ip[ip4::proto];
    l4_off = off + ihl;
    l4_len = total - ihl;  // bytes past `total` are Ethernet padding
    p.hdr.l3_proto = L3::ipv4;
  } else if (type == kEthIPv6) {
    if (len - off < kIPv6Hdr) return ParseResult::truncated_ipv6;
    const uint8_t* ip = d + off;
    if ((ip[0] >> 4) != 6) return ParseResult::bad_ipv6_version;
    const uint32_t plen = load16(ip + ip6::payload_len);
    if (plen > len - off - kIPv6Hdr) return ParseResult::bad_ipv6_payload_len;
    proto = ip[ip6::next];
    if (proto != kProtoUdp && proto != kProtoTcp)
      return is_ipv6_ext(proto) ? ParseResult::ipv6_ext_header : ParseResult::not_udp_tcp;
    l4_off = off + kIPv6Hdr;
    l4_len = plen;
    p.hdr.l3_proto = L3::ipv6;
  } else {
    return ParseResult::not_ip;
  }
  p.hdr.l3 = static_cast<uint16_t>(off);
  p.hdr.l4 = static_cast<uint16_t>(l4_off);

  const uint8_t* l4 = d + l4_off;
  uint32_t payload_off;
  if (proto == kProtoUdp) {
    if (l4_len < kUdpHdr) return ParseResult::truncated_udp;
    const uint32_t ulen = load16(l4 + udp::len);
    if (ulen < kUdpHdr || ulen > l4_len) return ParseResult::bad_udp_len;
    payload_off = l4_off + kUdpHdr;
    p.hdr.payload_len = static_cast<uint16_t>(ulen - kUdpHdr);
    p.hdr.l4_proto = L4::udp;
  } else if (proto == kProtoTcp) {
    if (l4_len < kTcpHdr) return ParseResult::truncated_tcp;
    const uint32_t doff = (l4[tcp::off] >> 4) * 4u;
    if (doff < kTcpHdr || doff > l4_len) return ParseResult::bad_tcp_offset;
    payload_off = l4_off + doff;
    p.hdr.payload_len = static_cast<uint16_t>(l4_len - doff);
    p.hdr.l4_proto = L4::tcp;
  } else {
    return ParseResult::not_udp_tcp;
  }
  p.hdr.payload = static_cast<uint16_t>(payload_off);

  if (opt.verify_l4_checksum && !csum::l4_valid(p)) {
    // A checksum left to offload carries only the folded pseudo-header sum.
    const uint32_t seg = payload_off + p.hdr.payload_len - l4_off;
    const uint64_t ph = p.hdr.l3_proto == L3::ipv4 ? csum::pseudo_ipv4(d + off, proto, seg)
                                                   : csum::pseudo_ipv6(d + off, proto, seg);
    const uint8_t* field = l4 + (proto == kProtoUdp ? udp::csum : tcp::csum);
    if (load16(field) != csum::fold(ph)) {
      return proto == kProtoUdp ? ParseResult::bad_udp_checksum : ParseResult::bad_tcp_checksum;
    }
    p.hdr.l4_csum_partial = true;
  }
  p.parsed = true;
  return ParseResult::ok;
}

}  // namespace gaon

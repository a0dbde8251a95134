// Header parsing: Ethernet (+ one 802.1Q tag), IPv4 (options allowed), IPv6 (fixed header;
// extension headers are passed through unparsed), UDP and TCP.
//
// parse() fills Packet::hdr and sets Packet::parsed for a well-formed UDP/TCP packet. Any
// other frame is classified by a reason: malformed ones (truncated, bad lengths, bad
// checksums, IPv4 fragments) and ones that are simply not a flow (ARP, ICMP, IPv6
// extension headers). The engine never hands either kind to an ikernel as a flow packet:
// it passes them on untouched (fail-open) and counts them by reason.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

#include "gaon/packet.h"

namespace gaon {

enum class ParseResult : uint8_t {
  ok = 0,
  // not a flow (passed on, counted, not an error)
  not_ip,           // ARP, LLDP, ...
  not_udp_tcp,      // ICMP, IGMP, ...
  ipv6_ext_header,  // IPv6 with extension headers: passed through unparsed
  // malformed (passed on, counted as errors)
  truncated_eth,
  truncated_vlan,
  truncated_ipv4,
  bad_ipv4_version,
  bad_ipv4_ihl,
  bad_ipv4_total_len,
  bad_ipv4_checksum,
  ipv4_fragment,
  truncated_ipv6,
  bad_ipv6_version,
  bad_ipv6_payload_len,
  truncated_udp,
  bad_udp_len,
  bad_udp_checksum,
  truncated_tcp,
  bad_tcp_offset,
  bad_tcp_checksum,
  count_,
};
inline constexpr size_t kParseResults = static_cast<size_t>(ParseResult::count_);

std::string_view to_string(ParseResult r);
inline bool is_malformed(ParseResult r) { return r >= ParseResult::truncated_eth; }

struct ParseOptions {
  // Verify UDP/TCP checksums. A checksum left to offload (only the pseudo-header sum in
  // the field, as frames sent by a local socket through veth or loopback carry) is
  // accepted and flagged in hdr.l4_csum_partial.
  bool verify_l4_checksum = true;
};

ParseResult parse(Packet& p, const ParseOptions& opt = {});

// Per-reason counters, as the engine keeps them.
struct ParseStats {
  std::array<uint64_t, kParseResults> by_reason{};
  uint64_t csum_partial = 0;
};

}  // namespace gaon

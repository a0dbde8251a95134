// auth — drops forged requests: UDP datagrams must carry a valid HMAC-SHA256 token.
//
// Attach it to a UDP service. Every datagram of its flows from the wire is checked; a
// valid one passes to the application, anything else is dropped and counted by reason.
// Two framings (parameter `framing`):
//   trailer  HMAC-SHA256(key, payload) appended as a 32-byte trailer, for any UDP service.
//            A valid datagram passes with the trailer stripped, so the application sees
//            its original payload (UDP checksum then 0 on IPv4, recomputed on IPv6).
//   coap     CoAP (RFC 7252) requests carrying a compact JWT signed with HS256 (RFC 7519)
//            in option `coap_option` (default 65000: experimental range, and even, so
//            "elective": a server that does not know it ignores it). CoAP tokens are at most
//            8 bytes, too short for a JWT, so the option carries it. A valid request passes
//            unchanged; the JWT's "exp"/"nbf" are checked against the wall clock (with
//            `leeway_s`). Empty messages (code 0.00: the ACK/RST of CoAP's reliability)
//            pass; other non-requests are dropped.
// Keys are per instance — so per tenant — and only its owner sets them, with state
// operations; they are never readable back (stats only says whether one is set).
// `rotate` keeps the previous key valid for a grace period so clients can move over.
// Give keys through libgaon (gaon_ik_call, as examples/coap_server.c does) or with
// `gaonctl call ID set_key - < KEYFILE` (an argument "-" comes from standard input), not
// on a command line, where ps shows it.
// Without a key every datagram is dropped (fail-closed). Verification uses OpenSSL's
// SHA-256 with precomputed HMAC states (hmac.h: no allocation per datagram) and compares
// in constant time. Replies from the application (egress) pass unchanged. Packets that are
// not UDP (a TCP flow attached by mistake) are dropped.
// Optional per-source failure limit: with fail_limit=N, a source address with N failures
// in the current second has its further datagrams dropped unverified until the next one
// (`rate_limited`), so a flood of forgeries costs one table lookup each.
//
// Parameters:
//   framing=trailer   trailer | coap
//   coap_option=65000 the CoAP option number carrying the JWT (1..65535)
//   leeway_s=0        clock skew allowed for exp and nbf (seconds)
//   require_exp=false reject JWTs without "exp"
//   fail_limit=0      failures per second per source before it is cut off (0: no limit)
//   fail_sources=1024 sources tracked for fail_limit (a direct-mapped table)
// State operations:
//   set_key HEX          the key (32 to 128 bytes, as hex); the previous one is dropped
//   rotate HEX GRACE_S   a new key; the current one stays valid for GRACE_S seconds
//   stats                counters, and whether a key / a previous key is in use
// Counters (stats): passed, empty_passed, previous_key_used, rotations, and dropped by
// reason: not_udp, no_key, unsigned (no token: trailer too short, no option), malformed
// (CoAP or JWT form), not_request, several_tokens, bad_header (alg not HS256, "crit"),
// bad_signature, bad_claims, expired, not_yet_valid, rate_limited, too_large (a datagram
// larger than a frame: its token cannot be checked on the head the ikernel sees).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "gaon/ikernel.h"
#include "hmac.h"

namespace gaon::ikernels {

class Auth : public PerPacketIKernel<Auth> {
 public:
  enum Reason : uint8_t {
    not_udp,
    no_key,
    unsigned_,
    malformed,
    not_request,
    several_tokens,
    bad_header,
    bad_signature,
    bad_claims,
    expired,
    not_yet_valid,
    rate_limited,
    too_large,
    reasons_
  };
  static std::string_view reason_name(Reason r);

  static std::vector<ParamSpec> param_specs();
  static std::vector<StateOpSpec> state_ops();

  Result<void> configure(const Params& p) override;
  size_t state_bytes() const override;
  Result<void> init(StateRegion& region) override;
  Verdict on_packet(Context& ctx, Packet& p);
  Verdict on_oversize(Context&, Packet& p, Direction dir) override {
    if (dir == Direction::egress) return p.verdict;
    ++s_->dropped[too_large];
    return Verdict::drop;
  }
  Result<nlohmann::json> call(std::string_view op, std::span<const std::string> args) override;
  void cleanup() override;

 private:
  struct Key {
    auth::HmacSha256 mac;
    uint64_t until_ns;  // the previous key: valid until then
    bool present;
  };
  struct Source {
    uint64_t addr;  // a hash of the source address; 0 = free
    uint64_t second;
    uint32_t failures;
  };
  struct State {
    Key cur, prev;
    uint64_t passed, empty_passed, previous_key_used, rotations;
    std::array<uint64_t, reasons_> dropped;
  };

  Verdict fail(Reason r, uint64_t src, uint64_t now);
  bool limited(uint64_t src, uint64_t now) const;
  Verdict trailer(Packet& p, std::span<const auth::HmacSha256* const> keys, uint64_t src,
                  uint64_t now);
  Verdict coap(Packet& p, std::span<const auth::HmacSha256* const> keys, uint64_t src,
               uint64_t now);

  bool coap_ = false;
  uint16_t coap_option_ = 65000;
  int64_t leeway_s_ = 0;
  bool require_exp_ = false;
  uint32_t fail_limit_ = 0;
  uint64_t nsources_ = 0;
  int64_t wall_minus_mono_s_ = 0;
  State* s_ = nullptr;
  Source* sources_ = nullptr;
};

}  // namespace gaon::ikernels

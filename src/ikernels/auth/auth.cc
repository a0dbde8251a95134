#include "auth.h"

#include <bit>

#include <fmt/core.h>

#include "coap.h"
#include "gaon/clock.h"
#include "gaon/reply.h"
#include "jwt.h"

namespace gaon::ikernels {

namespace {

constexpr uint64_t kSecond = kSecondNs;

// A key given as hex: 32 to 128 bytes (RFC 7518 §3.2: at least the hash's 256 bits).
Result<std::vector<uint8_t>> parse_key(std::string_view hex) {
  if (hex.size() % 2 != 0 || hex.size() < 64 || hex.size() > 256)
    return make_error("the key must be 32 to 128 bytes written as hex (64 to 256 digits)");
  std::vector<uint8_t> k(hex.size() / 2);
  auto nib = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < k.size(); ++i) {
    const int hi = nib(hex[2 * i]), lo = nib(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return make_error("the key must be hex digits only");
    k[i] = uint8_t(hi << 4 | lo);
  }
  return k;
}

// The source address, hashed (FNV-1a over its bytes; never 0).
uint64_t source_of(const Packet& p) {
  const uint8_t* ip = p.data() + p.hdr.l3;
  const bool v4 = p.hdr.l3_proto == L3::ipv4;
  const uint8_t* a = ip + (v4 ? 12 : 8);
  uint64_t h = 1469598103934665603ull;
  for (int i = 0; i < (v4 ? 4 : 16); ++i) h = (h ^ a[i]) * 1099511628211ull;
  return h | 1;
}

}  // namespace

std::string_view Auth::reason_name(Reason r) {
  static constexpr std::string_view names[reasons_] = {
      "not_udp",        "no_key",       "unsigned",      "malformed",  "not_request",
      "several_tokens", "bad_header",   "bad_signature", "bad_claims", "expired",
      "not_yet_valid",  "rate_limited", "too_large"};
  return r < reasons_ ? names[r] : "?";
}

std::vector<ParamSpec> Auth::param_specs() {
  return {
      {"framing", ParamType::string, "trailer",
       "trailer (HMAC-SHA256 of the payload appended) or coap (a JWT in a CoAP option)"},
      {"coap_option", ParamType::u64, "65000", "the CoAP option number carrying the JWT", 1, 65535},
      {"leeway_s", ParamType::u64, "0", "clock skew allowed for a JWT's exp and nbf (seconds)", 0,
       86400},
      {"require_exp", ParamType::boolean, "false", "reject JWTs without an exp claim"},
      {"fail_limit", ParamType::u64, "0",
       "failures per second from one source before its datagrams are dropped unchecked (0: off)", 0,
       1e9},
      {"fail_sources", ParamType::u64, "1024", "sources tracked for fail_limit", 1, 1 << 24},
  };
}

std::vector<StateOpSpec> Auth::state_ops() {
  return {
      {"set_key", "HEX", "set the key (32 to 128 bytes in hex); drops any previous one"},
      {"rotate", "HEX GRACE_S", "a new key; the current one stays valid for GRACE_S more seconds"},
      {"stats", "", "counters by reason, and whether keys are set (never the keys)"}};
}

Result<void> Auth::configure(const Params& p) {
  const std::string& framing = p.str("framing");
  if (framing != "trailer" && framing != "coap")
    return make_error("framing={}: expected trailer or coap", framing);
  coap_ = framing == "coap";
  coap_option_ = uint16_t(p.u64("coap_option"));
  leeway_s_ = int64_t(p.u64("leeway_s"));
  require_exp_ = p.flag("require_exp");
  fail_limit_ = uint32_t(p.u64("fail_limit"));
  nsources_ = fail_limit_ ? std::bit_ceil(p.u64("fail_sources")) : 0;
  wall_minus_mono_s_ = wall_minus_mono_s();
  return ok();
}

size_t Auth::state_bytes() const {
  return sizeof(State) + alignof(Source) + nsources_ * sizeof(Source);
}

Result<void> Auth::init(StateRegion& region) {
  s_ = region.carve<State>();
  sources_ = nsources_ ? region.carve<Source>(nsources_) : nullptr;
  if (s_ == nullptr || (nsources_ && sources_ == nullptr))
    return make_error("state region too small");
  new (s_) State{};
  return ok();
}

void Auth::cleanup() {
  if (s_ == nullptr) return;
  s_->cur.mac.wipe();
  s_->prev.mac.wipe();
}

bool Auth::limited(uint64_t src, uint64_t now) const {
  if (fail_limit_ == 0) return false;
  const Source& e = sources_[src & (nsources_ - 1)];
  return e.addr == src && e.second == now / kSecond && e.failures >= fail_limit_;
}

Verdict Auth::fail(Reason r, uint64_t src, uint64_t now) {
  ++s_->dropped[r];
  if (fail_limit_ != 0) {
    Source& e = sources_[src & (nsources_ - 1)];
    if (e.addr != src || e.second != now / kSecond) e = Source{src, now / kSecond, 0};
    ++e.failures;
  }
  return Verdict::drop;
}

Verdict Auth::on_packet(Context& ctx, Packet& p) {
  const uint64_t now = ctx.now_ns();
  if (!p.is_udp()) {
    ++s_->dropped[not_udp];
    return Verdict::drop;
  }
  const uint64_t src = source_of(p);
  if (limited(src, now)) {
    ++s_->dropped[rate_limited];
    return Verdict::drop;
  }
  if (!s_->cur.present) return fail(no_key, src, now);
  // The keys a token may be signed with: the current one, and the previous one in its grace.
  const auth::HmacSha256* keys[2] = {&s_->cur.mac, nullptr};
  if (s_->prev.present) {
    if (now < s_->prev.until_ns) {
      keys[1] = &s_->prev.mac;
    } else {
      s_->prev.mac.wipe();
      s_->prev.present = false;
    }
  }
  return coap_ ? coap(p, keys, src, now) : trailer(p, keys, src, now);
}

Verdict Auth::trailer(Packet& p, std::span<const auth::HmacSha256* const> keys, uint64_t src,
                      uint64_t now) {
  constexpr size_t kTag = auth::HmacSha256::kTag;
  const size_t n = p.hdr.payload_len;
  if (n < kTag) return fail(unsigned_, src, now);
  const std::span<const uint8_t> body(p.payload(), n - kTag);
  const uint8_t* tag = p.payload() + n - kTag;
  const bool ok_cur = keys[0]->verify(body, tag);
  const bool ok_prev = !ok_cur && keys[1] != nullptr && keys[1]->verify(body, tag);
  if (!ok_cur && !ok_prev) return fail(bad_signature, src, now);
  if (!ok_cur) ++s_->previous_key_used;
  // The application sees its own payload: the trailer goes (UDP checksum 0 on IPv4).
  if (!reply::set_payload_len(p, uint32_t(n - kTag))) return fail(malformed, src, now);
  reply::finish_udp(p, reply::UdpChecksum::none);
  ++s_->passed;
  return Verdict::to_host;
}

Verdict Auth::coap(Packet& p, std::span<const auth::HmacSha256* const> keys, uint64_t src,
                   uint64_t now) {
  auth::CoapMessage m;
  if (auth::parse_coap(p.payload_bytes(), coap_option_, m) != auth::CoapParse::ok)
    return fail(malformed, src, now);
  if (m.is_empty() && m.token.empty() && m.options == 0 && m.payload.empty()) {
    ++s_->empty_passed;  // CoAP's own ACK/RST: they carry no request
    return Verdict::to_host;
  }
  if (!m.is_request()) return fail(not_request, src, now);
  if (m.wanted_count == 0) return fail(unsigned_, src, now);
  if (m.wanted_count > 1) return fail(several_tokens, src, now);
  const auth::JwtOptions opt{.now_s = int64_t(now / kSecond) + wall_minus_mono_s_,
                             .leeway_s = leeway_s_,
                             .require_exp = require_exp_};
  size_t used = 0;
  const std::string_view token(reinterpret_cast<const char*>(m.wanted.data()), m.wanted.size());
  switch (auth::verify_jwt(token, keys, opt, &used)) {
    case auth::JwtResult::ok:
      break;
    case auth::JwtResult::malformed:
      return fail(malformed, src, now);
    case auth::JwtResult::bad_header:
      return fail(bad_header, src, now);
    case auth::JwtResult::bad_signature:
      return fail(bad_signature, src, now);
    case auth::JwtResult::bad_claims:
      return fail(bad_claims, src, now);
    case auth::JwtResult::expired:
      return fail(expired, src, now);
    case auth::JwtResult::not_yet_valid:
      return fail(not_yet_valid, src, now);
    case auth::JwtResult::count_:
      return fail(malformed, src, now);
  }
  if (used == 1) ++s_->previous_key_used;
  ++s_->passed;
  return Verdict::to_host;
}

Result<nlohmann::json> Auth::call(std::string_view op, std::span<const std::string> args) {
  const uint64_t now = mono_ns();  // the datapath's clock
  if (op == "set_key" || op == "rotate") {
    auto key = parse_key(args[0]);
    if (!key) return make_error("{}: {}", op, key.error());
    uint64_t grace = 0;
    if (op == "rotate") {
      auto g = parse_param_value(ParamType::u64, args[1]);
      if (!g) return make_error("rotate: GRACE_S: {}", g.error());
      grace = std::get<uint64_t>(*g);
      if (!s_->cur.present) return make_error("rotate: no key is set yet (use set_key)");
      s_->prev = s_->cur;
      s_->prev.until_ns = now + grace * kSecond;
      ++s_->rotations;
    } else {
      s_->prev.mac.wipe();
      s_->prev.present = false;
    }
    s_->cur.mac.set_key(*key);
    s_->cur.present = true;
    OPENSSL_cleanse(key->data(), key->size());
    return nlohmann::json{{"key", "set"}, {"previous_key_valid_s", op == "rotate" ? grace : 0}};
  }
  if (op == "stats") {
    nlohmann::json dropped = nlohmann::json::object();
    uint64_t total = 0;
    for (size_t i = 0; i < reasons_; ++i) {
      dropped[std::string(reason_name(Reason(i)))] = s_->dropped[i];
      total += s_->dropped[i];
    }
    return nlohmann::json{{"passed", s_->passed},
                          {"dropped", total},
                          {"dropped_by_reason", dropped},
                          {"empty_passed", s_->empty_passed},
                          {"previous_key_used", s_->previous_key_used},
                          {"rotations", s_->rotations},
                          {"key_set", s_->cur.present},
                          {"previous_key_in_grace", s_->prev.present && now < s_->prev.until_ns},
                          {"framing", coap_ ? "coap" : "trailer"}};
  }
  return IKernel::call(op, args);
}

GAON_IKERNEL(Auth, "auth",
             "drops forged requests: UDP datagrams must carry a valid HMAC-SHA256 token");

}  // namespace gaon::ikernels

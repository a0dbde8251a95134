// auth: HMAC-SHA256 (RFC 4231 vectors, OpenSSL's own HMAC), base64url, JWT (RFC 7515's
// example and tokens made here with OpenSSL), the CoAP parser, and the ikernel on the
// engine with mem ports: trailer and CoAP framings, key rotation, expiry, the failure limit.
#include "auth.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "coap.h"
#include "frames.h"
#include "gaon/engine.h"
#include "gaon/mem_port.h"
#include "gaon/parse.h"
#include "jwt.h"
#include "tokens.h"

namespace gaon {
namespace {

using namespace ikernels::auth;
using test::Bytes;

using test::b64url;
using test::bytes;
using test::coap_msg;
using test::make_jwt;
using test::openssl_hmac;
using test::unhex;
std::string hex(const uint8_t* p, size_t n) { return test::hex({p, n}); }

const Bytes kKey = unhex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
const Bytes kKey2 = unhex("202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f");
const std::string kHs256 = R"({"alg":"HS256","typ":"JWT"})";

// ---------------------------------------------------------------- HMAC

TEST(Hmac, Rfc4231Vectors) {
  struct Case {
    Bytes key;
    std::string msg, mac;
  } cases[] = {
      {Bytes(20, 0x0b), "Hi There",
       "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
      {Bytes{'J', 'e', 'f', 'e'}, "what do ya want for nothing?",
       "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
      {Bytes(131, 0xaa), "Test Using Larger Than Block-Size Key - Hash Key First",
       "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
  };
  for (const auto& c : cases) {
    HmacSha256 h(c.key);
    uint8_t out[32];
    h.mac(bytes(c.msg), out);
    EXPECT_EQ(hex(out, 32), c.mac) << c.msg;
    EXPECT_TRUE(h.verify(bytes(c.msg), unhex(c.mac).data()));
    Bytes bad = unhex(c.mac);
    bad[31] ^= 1;
    EXPECT_FALSE(h.verify(bytes(c.msg), bad.data()));
  }
}

TEST(Hmac, AgreesWithOpenSslsHmacOnRandomKeysAndMessages) {
  std::mt19937 rng(7);
  for (int i = 0; i < 200; ++i) {
    Bytes key(rng() % 150), msg(rng() % 1500);
    for (auto& b : key) b = uint8_t(rng());
    for (auto& b : msg) b = uint8_t(rng());
    uint8_t out[32];
    HmacSha256(key).mac(msg, out);
    EXPECT_EQ(Bytes(out, out + 32), openssl_hmac(key, msg)) << i;
  }
}

// ---------------------------------------------------------------- JWT

TEST(Jwt, Base64url) {
  uint8_t out[16];
  EXPECT_EQ(base64url_decode("", out), 0);
  EXPECT_EQ(base64url_decode("Zm9vYmE", out), 5);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(out), 5), "fooba");
  EXPECT_EQ(base64url_decode("-_8", out), 2);
  EXPECT_EQ(out[0], 0xfb);
  EXPECT_EQ(base64url_decode("Zm9vYmE=", out), -1);  // padding is not base64url in a JWT
  EXPECT_EQ(base64url_decode("Zm9v+mE", out), -1);   // '+' is base64, not base64url
  EXPECT_EQ(base64url_decode("Z", out), -1);         // impossible length
  EXPECT_EQ(base64url_decode("Zh", out), -1);        // non-canonical trailing bits
  uint8_t small[2];
  EXPECT_EQ(base64url_decode("Zm9v", small), -1);  // does not fit
}

TEST(Jwt, Rfc7515ExampleA1) {
  const std::string token =
      "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9."
      "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVl"
      "fQ."
      "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
  uint8_t k[64];
  ASSERT_EQ(
      base64url_decode(
          "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow",
          k),
      64);
  const HmacSha256 key(std::span<const uint8_t>(k, 64));
  const HmacSha256* keys[] = {&key};
  EXPECT_EQ(verify_jwt(token, keys, {.now_s = 1300819379}), JwtResult::ok);
  EXPECT_EQ(verify_jwt(token, keys, {.now_s = 1300819380}),
            JwtResult::expired);  // exp is exclusive
  EXPECT_EQ(verify_jwt(token, keys, {.now_s = 1300819390, .leeway_s = 30}), JwtResult::ok);
  const HmacSha256 other(kKey);
  const HmacSha256* wrong[] = {&other};
  EXPECT_EQ(verify_jwt(token, wrong, {.now_s = 1300819000}), JwtResult::bad_signature);
}

TEST(Jwt, TokensMadeWithOpenSsl) {
  const HmacSha256 k1(kKey), k2(kKey2);
  const HmacSha256* keys[] = {&k1, &k2};
  const JwtOptions at{.now_s = 1000};
  size_t used = 9;
  EXPECT_EQ(verify_jwt(make_jwt(kHs256, R"({"sub":"a","exp":2000})", kKey), keys, at, &used),
            JwtResult::ok);
  EXPECT_EQ(used, 0u);
  EXPECT_EQ(verify_jwt(make_jwt(kHs256, R"({"exp":2000.5,"nbf":999})", kKey2), keys, at, &used),
            JwtResult::ok);
  EXPECT_EQ(used, 1u);  // signed with the second key
  struct Case {
    std::string what, token;
    JwtResult want;
  } cases[] = {
      {"no claims", make_jwt(kHs256, "{}", kKey), JwtResult::ok},
      {"nested claims",
       make_jwt(kHs256, R"({"a":{"b":[1,{"c":null}],"exp":"x"},"exp":1001})", kKey), JwtResult::ok},
      {"expired", make_jwt(kHs256, R"({"exp":1000})", kKey), JwtResult::expired},
      {"not yet", make_jwt(kHs256, R"({"nbf":1001})", kKey), JwtResult::not_yet_valid},
      {"alg none", b64url(R"({"alg":"none"})") + "." + b64url("{}") + ".", JwtResult::bad_header},
      {"alg none, signed", make_jwt(R"({"alg":"none"})", "{}", kKey), JwtResult::bad_header},
      {"HS512", make_jwt(R"({"alg":"HS512"})", "{}", kKey), JwtResult::bad_header},
      {"alg not a string", make_jwt(R"({"alg":256})", "{}", kKey), JwtResult::bad_header},
      {"no alg", make_jwt(R"({"typ":"JWT"})", "{}", kKey), JwtResult::bad_header},
      {"escaped alg name", make_jwt(R"({"\u0061lg":"HS256"})", "{}", kKey), JwtResult::bad_header},
      {"two algs", make_jwt(R"({"alg":"HS256","alg":"HS256"})", "{}", kKey), JwtResult::bad_header},
      {"crit", make_jwt(R"({"alg":"HS256","crit":["x"],"x":1})", "{}", kKey),
       JwtResult::bad_header},
      {"wrong key", make_jwt(kHs256, "{}", unhex(std::string(64, 'a'))), JwtResult::bad_signature},
      {"exp a string", make_jwt(kHs256, R"({"exp":"2000"})", kKey), JwtResult::bad_claims},
      {"exp with exponent", make_jwt(kHs256, R"({"exp":2e3})", kKey), JwtResult::bad_claims},
      {"two exps", make_jwt(kHs256, R"({"exp":2000,"exp":3000})", kKey), JwtResult::bad_claims},
      {"two parts", b64url(kHs256) + "." + b64url("{}"), JwtResult::malformed},
      {"four parts", make_jwt(kHs256, "{}", kKey) + ".x", JwtResult::malformed},
      {"header not JSON", make_jwt("alg=HS256", "{}", kKey), JwtResult::malformed},
      {"header an array", make_jwt(R"(["alg","HS256"])", "{}", kKey), JwtResult::malformed},
      {"trailing bytes", make_jwt(kHs256 + "x", "{}", kKey), JwtResult::malformed},
      {"claims not JSON", make_jwt(kHs256, R"({"exp":})", kKey), JwtResult::malformed},
      {"deep nesting",
       make_jwt(kHs256, "{\"a\":" + std::string(40, '[') + std::string(40, ']') + "}", kKey),
       JwtResult::malformed},
      {"bad escape", make_jwt(kHs256, R"({"a":"\x"})", kKey), JwtResult::malformed},
      {"base64 padding", b64url(kHs256) + "=." + b64url("{}") + ".x", JwtResult::malformed},
  };
  for (const auto& c : cases) EXPECT_EQ(verify_jwt(c.token, keys, at), c.want) << c.what;
  // A signature cut short, or a claim changed after signing.
  std::string t = make_jwt(kHs256, R"({"exp":2000})", kKey);
  EXPECT_EQ(verify_jwt(t.substr(0, t.size() - 1), keys, at), JwtResult::bad_signature);
  const std::string forged =
      b64url(kHs256) + "." + b64url(R"({"exp":9999})") + t.substr(t.rfind('.'));
  EXPECT_EQ(verify_jwt(forged, keys, at), JwtResult::bad_signature);
  EXPECT_EQ(verify_jwt(make_jwt(kHs256, "{}", kKey), keys, {.now_s = 1, .require_exp = true}),
            JwtResult::bad_claims);
  EXPECT_EQ(verify_jwt(std::string(kMaxJwt + 1, 'a'), keys, at), JwtResult::malformed);
}

// ---------------------------------------------------------------- CoAP

TEST(Coap, ParsesRequestsAndNamesWhatIsWrong) {
  CoapMessage m;
  const std::string get = coap_msg(0, 1, 0x1234, "tok", {{11, "path"}, {65000, "jwt"}}, "hi");
  ASSERT_EQ(parse_coap(bytes(get), 65000, m), CoapParse::ok);
  EXPECT_TRUE(m.is_request());
  EXPECT_EQ(m.message_id, 0x1234);
  EXPECT_EQ(std::string(m.token.begin(), m.token.end()), "tok");
  EXPECT_EQ(m.options, 2u);
  EXPECT_EQ(m.wanted_count, 1u);
  EXPECT_EQ(std::string(m.wanted.begin(), m.wanted.end()), "jwt");
  EXPECT_EQ(std::string(m.payload.begin(), m.payload.end()), "hi");
  const std::string big(300, 'v');  // a 14-nibble length
  const std::string two = coap_msg(0, 2, 1, "", {{20, big}, {65000, "a"}, {65000, "b"}});
  ASSERT_EQ(parse_coap(bytes(two), 65000, m), CoapParse::ok);  // (m's views point into it)
  EXPECT_EQ(m.wanted_count, 2u);
  EXPECT_EQ(std::string(m.wanted.begin(), m.wanted.end()), "a");
  ASSERT_EQ(parse_coap(bytes(coap_msg(2, 0, 1, "", {})), 65000, m), CoapParse::ok);
  EXPECT_TRUE(m.is_empty());
  ASSERT_EQ(parse_coap(bytes(coap_msg(2, 0x45, 1, "", {})), 65000, m), CoapParse::ok);  // 2.05
  EXPECT_FALSE(m.is_request());
  struct Case {
    std::string what, msg;
    CoapParse want;
  } cases[] = {
      {"3 bytes", std::string("\x40\x01\x00", 3), CoapParse::too_short},
      {"version 2", std::string("\x80\x01\x00\x01", 4), CoapParse::bad_version},
      {"TKL 9", std::string("\x49\x01\x00\x01", 4) + std::string(9, 't'),
       CoapParse::bad_token_length},
      {"token past the end", std::string("\x44\x01\x00\x01tt", 6), CoapParse::too_short},
      {"delta 15", std::string("\x40\x01\x00\x01\xf1x", 6), CoapParse::bad_option},
      {"length 15", std::string("\x40\x01\x00\x01\x1fx", 6), CoapParse::bad_option},
      {"extension missing", std::string("\x40\x01\x00\x01\xd1", 5), CoapParse::truncated_option},
      {"value past the end", std::string("\x40\x01\x00\x01\x15xy", 7), CoapParse::truncated_option},
      {"marker, no payload", std::string("\x40\x01\x00\x01\xff", 5), CoapParse::empty_payload},
      {"number over 65535", coap_msg(0, 1, 1, "", {{65000, ""}}) + std::string("\xe0\x02\x00", 3),
       CoapParse::option_overflow},
  };
  for (const auto& c : cases) EXPECT_EQ(parse_coap(bytes(c.msg), 65000, m), c.want) << c.what;
}

// ---------------------------------------------------------------- the ikernel

class AuthTest : public ::testing::Test {
 protected:
  void start(std::vector<std::string> params) {
    auto e = Engine::create({.pool_frames = 1024});
    ASSERT_TRUE(e) << e.error();
    engine_ = std::move(*e);
    engine_->set_ports(&wire_, &host_);
    auto inst = Instance::create({.type = "auth", .params = params}, Registry::global());
    ASSERT_TRUE(inst) << inst.error();
    id_ = *engine_->add_instance(std::move(*inst));
    ASSERT_TRUE(engine_->add_flow(*FlowKey::parse("udp:10.0.0.2:5683"), id_));
  }
  void TearDown() override {
    if (engine_) {
      EXPECT_EQ(engine_->pool().available(), engine_->pool().capacity());
    }
  }
  // A datagram from `src` to the service; what reaches the host (UDP payloads).
  std::vector<std::string> send(const std::string& payload, const std::string& src = "10.0.0.1") {
    test::FrameSpec f;
    f.src_ip = src;
    f.dst_ip = "10.0.0.2";
    f.sport = 40000;
    f.dport = 5683;
    f.payload = test::text(payload);
    Packet* p = test::make_packet(engine_->pool(), test::build_frame(f));
    EXPECT_EQ(wire_.inject({&p, 1}), 1u);
    for (int i = 0; i < 3; ++i) engine_->poll(now_);
    std::vector<std::string> out;
    Packet* buf[kBurst];
    while (uint32_t n = host_.collect(buf)) {
      for (uint32_t i = 0; i < n; ++i) {
        const Bytes b = test::bytes_of(*buf[i]);
        EXPECT_TRUE(test::ref_ip_ok(b));
        EXPECT_TRUE(test::ref_l4_ok(b));
        EXPECT_EQ(parse(*buf[i]), ParseResult::ok);
        out.emplace_back(reinterpret_cast<char*>(buf[i]->payload()), buf[i]->hdr.payload_len);
        engine_->pool().free(buf[i]);
      }
    }
    EXPECT_EQ(wire_.collect(buf), 0u);  // it never answers on the wire
    return out;
  }
  static std::string signed_(const std::string& payload, const Bytes& key = kKey) {
    return test::with_trailer(payload, key);
  }
  Result<nlohmann::json> call(const std::string& op, std::vector<std::string> args = {}) {
    return engine_->call(id_, op, args);
  }
  nlohmann::json stats() { return call("stats").value(); }

  MemPort wire_{"wire"}, host_{"host"};
  std::unique_ptr<Engine> engine_;
  uint32_t id_ = 0;
  uint64_t now_ = Engine::now_ns();  // the clock state operations read too
};

TEST_F(AuthTest, TrailerFramingPassesValidDatagramsStrippedAndDropsTheRest) {
  start({});
  EXPECT_TRUE(send(signed_("hello")).empty());  // no key yet: fail-closed
  ASSERT_TRUE(call("set_key", {hex(kKey.data(), kKey.size())}));
  EXPECT_EQ(send(signed_("hello")), std::vector<std::string>{"hello"});
  EXPECT_EQ(send(signed_("")), std::vector<std::string>{""});
  const std::string big(1000, 'x');
  EXPECT_EQ(send(signed_(big)), std::vector<std::string>{big});
  std::string forged = signed_("hello");
  forged[0] = 'j';
  EXPECT_TRUE(send(forged).empty());
  EXPECT_TRUE(send(signed_("hello", kKey2)).empty());
  EXPECT_TRUE(send("short").empty());
  EXPECT_TRUE(send(signed_("hello").substr(0, 36)).empty());
  const auto st = stats();
  EXPECT_EQ(st["passed"], 3);
  EXPECT_EQ(st["dropped_by_reason"]["no_key"], 1);
  EXPECT_EQ(st["dropped_by_reason"]["bad_signature"], 3);
  EXPECT_EQ(st["dropped_by_reason"]["unsigned"], 1);
  EXPECT_EQ(st["key_set"], true);
  EXPECT_EQ(st.dump().find(hex(kKey.data(), kKey.size())), std::string::npos);  // never shown
}

TEST_F(AuthTest, RotationKeepsThePreviousKeyForItsGracePeriodOnly) {
  start({});
  ASSERT_TRUE(call("set_key", {hex(kKey.data(), kKey.size())}));
  ASSERT_TRUE(call("rotate", {hex(kKey2.data(), kKey2.size()), "5"}));
  EXPECT_EQ(send(signed_("new", kKey2)), std::vector<std::string>{"new"});
  EXPECT_EQ(send(signed_("old", kKey)), std::vector<std::string>{"old"});  // in its grace
  EXPECT_EQ(stats()["previous_key_used"], 1);
  EXPECT_EQ(stats()["previous_key_in_grace"], true);
  now_ += 6'000'000'000;
  EXPECT_TRUE(send(signed_("old", kKey)).empty());
  EXPECT_EQ(send(signed_("new", kKey2)), std::vector<std::string>{"new"});
  // set_key drops the previous key at once.
  ASSERT_TRUE(call("rotate", {hex(kKey.data(), kKey.size()), "100"}));
  ASSERT_TRUE(call("set_key", {hex(kKey.data(), kKey.size())}));
  EXPECT_TRUE(send(signed_("x", kKey2)).empty());
  EXPECT_EQ(stats()["rotations"], 2);
}

TEST_F(AuthTest, BadKeysAndArgumentsAreClearErrors) {
  start({});
  const std::string k = hex(kKey.data(), kKey.size());
  auto r = call("rotate", {k, "5"});
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().find("no key is set"), std::string::npos) << r.error();
  for (const std::string& bad :
       {std::string("abcd"), k + "0", std::string(64, 'g'), std::string(258, 'a')}) {
    auto e = call("set_key", {bad});
    ASSERT_FALSE(e) << bad;
    EXPECT_NE(e.error().find("set_key"), std::string::npos) << e.error();
  }
  ASSERT_TRUE(call("set_key", {k}));
  auto g = call("rotate", {k, "soon"});
  ASSERT_FALSE(g);
  EXPECT_NE(g.error().find("GRACE_S"), std::string::npos) << g.error();
  EXPECT_FALSE(call("set_key", {}));  // wrong argument count
  auto bad = Instance::create({.type = "auth", .params = {"framing=oauth"}}, Registry::global());
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().find("trailer or coap"), std::string::npos) << bad.error();
}

TEST_F(AuthTest, CoapFramingChecksTheJwtInItsOption) {
  start({"framing=coap", "leeway_s=2"});
  ASSERT_TRUE(call("set_key", {hex(kKey.data(), kKey.size())}));
  const int64_t wall = int64_t(time(nullptr));
  auto req = [&](std::vector<std::pair<uint32_t, std::string>> opts) {
    opts.insert(opts.begin(), {11, "sensor"});
    return coap_msg(0, 1, 7, "tk", opts);
  };
  const std::string valid = make_jwt(kHs256, R"({"exp":)" + std::to_string(wall + 60) + "}", kKey);
  const std::string m = req({{65000, valid}});
  EXPECT_EQ(send(m), std::vector<std::string>{m});  // unchanged
  const std::string ack = coap_msg(2, 0, 7, "", {});
  EXPECT_EQ(send(ack), std::vector<std::string>{ack});
  EXPECT_TRUE(send(req({})).empty());
  EXPECT_TRUE(send(req({{65000, valid}, {65000, valid}})).empty());
  EXPECT_TRUE(send(req({{65002, valid}})).empty());  // another option is not the token
  EXPECT_TRUE(send(coap_msg(0, 0x45, 7, "", {{65000, valid}})).empty());  // a response
  EXPECT_TRUE(
      send(req({{65000, make_jwt(kHs256, R"({"exp":)" + std::to_string(wall - 10) + "}", kKey)}}))
          .empty());
  EXPECT_TRUE(send(req({{65000, make_jwt(kHs256, "{}", kKey2)}})).empty());
  EXPECT_TRUE(send(req({{65000, make_jwt(R"({"alg":"none"})", "{}", kKey)}})).empty());
  EXPECT_TRUE(send("\x40\x01").empty());
  const auto st = stats()["dropped_by_reason"];
  EXPECT_EQ(stats()["passed"], 1);
  EXPECT_EQ(stats()["empty_passed"], 1);
  EXPECT_EQ(st["unsigned"], 2);
  EXPECT_EQ(st["several_tokens"], 1);
  EXPECT_EQ(st["not_request"], 1);
  EXPECT_EQ(st["expired"], 1);
  EXPECT_EQ(st["bad_signature"], 1);
  EXPECT_EQ(st["bad_header"], 1);
  EXPECT_EQ(st["malformed"], 1);
}

TEST_F(AuthTest, AFailureLimitCutsASourceOffForTheRestOfTheSecond) {
  start({"fail_limit=3"});
  ASSERT_TRUE(call("set_key", {hex(kKey.data(), kKey.size())}));
  now_ = (now_ / 1'000'000'000 + 1) * 1'000'000'000;  // the start of a second
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(send("forged" + std::string(32, 'x')).empty());
  EXPECT_TRUE(send(signed_("valid")).empty());  // cut off, even when valid
  EXPECT_EQ(send(signed_("valid"), "10.0.0.9"), std::vector<std::string>{"valid"});  // others not
  EXPECT_EQ(stats()["dropped_by_reason"]["rate_limited"], 1);
  now_ += 1'000'000'000;
  EXPECT_EQ(send(signed_("valid")), std::vector<std::string>{"valid"});
}

TEST_F(AuthTest, WhatIsNotUdpIsDropped) {
  start({});
  ASSERT_TRUE(engine_->add_flow(*FlowKey::parse("tcp:10.0.0.2:5683"), id_));
  ASSERT_TRUE(call("set_key", {hex(kKey.data(), kKey.size())}));
  test::FrameSpec f;
  f.proto = 6;
  f.dport = 5683;
  f.payload = test::text(signed_("x"));
  Packet* p = test::make_packet(engine_->pool(), test::build_frame(f));
  ASSERT_EQ(wire_.inject({&p, 1}), 1u);
  for (int i = 0; i < 3; ++i) engine_->poll(now_);
  Packet* buf[kBurst];
  EXPECT_EQ(host_.collect(buf), 0u);
  EXPECT_EQ(stats()["dropped_by_reason"]["not_udp"], 1);
}

}  // namespace
}  // namespace gaon

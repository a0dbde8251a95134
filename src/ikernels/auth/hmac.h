// HMAC-SHA256 (RFC 2104) for the datapath: OpenSSL's SHA-256 with the keyed inner and outer
// states computed once per key, so a MAC costs two SHA-256 runs over the message and no
// allocation (OpenSSL's HMAC and EVP_MAC APIs allocate a context copy per message).
// Checked against OpenSSL's own HMAC() and RFC 4231's vectors in auth_test.cc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

// The low-level SHA-256 calls are deprecated in OpenSSL 3 in favour of EVP, which
// allocates; they are still part of its API.
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/crypto.h>
#include <openssl/sha.h>

namespace gaon::ikernels::auth {

class HmacSha256 {
 public:
  static constexpr size_t kTag = 32;
  static constexpr size_t kBlock = 64;

  HmacSha256() = default;
  explicit HmacSha256(std::span<const uint8_t> key) { set_key(key); }

  void set_key(std::span<const uint8_t> key) {
    uint8_t k[kBlock] = {};
    if (key.size() > kBlock) {
      SHA256(key.data(), key.size(), k);  // long keys are hashed first
    } else {
      for (size_t i = 0; i < key.size(); ++i) k[i] = key[i];
    }
    uint8_t pad[kBlock];
    for (size_t i = 0; i < kBlock; ++i) pad[i] = k[i] ^ 0x36;
    SHA256_Init(&inner_);
    SHA256_Update(&inner_, pad, kBlock);
    for (size_t i = 0; i < kBlock; ++i) pad[i] = k[i] ^ 0x5c;
    SHA256_Init(&outer_);
    SHA256_Update(&outer_, pad, kBlock);
    OPENSSL_cleanse(k, sizeof(k));
    OPENSSL_cleanse(pad, sizeof(pad));
  }

  // The MAC of the concatenation of `parts`.
  void mac(std::span<const std::span<const uint8_t>> parts, uint8_t out[kTag]) const {
    SHA256_CTX c = inner_;
    for (auto part : parts) SHA256_Update(&c, part.data(), part.size());
    uint8_t h[kTag];
    SHA256_Final(h, &c);
    c = outer_;
    SHA256_Update(&c, h, kTag);
    SHA256_Final(out, &c);
  }
  void mac(std::span<const uint8_t> msg, uint8_t out[kTag]) const {
    const std::span<const uint8_t> parts[1] = {msg};
    mac(parts, out);
  }
  // Constant time in the tag's content.
  bool verify(std::span<const uint8_t> msg, const uint8_t tag[kTag]) const {
    uint8_t want[kTag];
    mac(msg, want);
    return CRYPTO_memcmp(want, tag, kTag) == 0;
  }

  // Forgets the key (its states).
  void wipe() {
    OPENSSL_cleanse(&inner_, sizeof(inner_));
    OPENSSL_cleanse(&outer_, sizeof(outer_));
  }

 private:
  SHA256_CTX inner_{}, outer_{};
};

}  // namespace gaon::ikernels::auth

#include "topk.h"

#include <arpa/inet.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "kvcache/mc_proto.h"

namespace gaon::ikernels {

std::vector<ParamSpec> TopK::param_specs() {
  return {
      {"key", ParamType::string, "mc_get", "what is counted: mc_get, src or bytes"},
      {"offset", ParamType::u64, "0", "(key=bytes) first payload byte of the key", 0, 65535},
      {"length", ParamType::u64, "8", "(key=bytes) bytes in the key", 1, 64},
      {"k", ParamType::u64, "10", "keys kept", 1, 1024},
      {"error", ParamType::f64, "0.001", "the sketch's error bound, as a share of N", 1e-6, 0.5},
      {"confidence", ParamType::f64, "0.99", "probability that the bound holds for a key", 0.5,
       0.999999},
      {"max_key", ParamType::u64, "64", "(key=mc_get) longer keys count by their first bytes", 1,
       250},
  };
}

std::vector<StateOpSpec> TopK::state_ops() {
  return {{"top", "", "the top K keys by estimated count"},
          {"reset", "", "forget every count"},
          {"stats", "", "packets, keys counted, N, sketch geometry and error bound"}};
}

Result<void> TopK::configure(const Params& p) {
  const std::string& key = p.str("key");
  if (key == "mc_get")
    rule_ = Rule::mc_get;
  else if (key == "src")
    rule_ = Rule::src;
  else if (key == "bytes")
    rule_ = Rule::bytes;
  else
    return make_error("key={}: expected mc_get, src or bytes", key);
  offset_ = uint32_t(p.u64("offset"));
  length_ = uint32_t(p.u64("length"));
  k_ = uint32_t(p.u64("k"));
  error_ = p.f64("error");
  confidence_ = p.f64("confidence");
  max_key_ = rule_ == Rule::mc_get ? uint32_t(p.u64("max_key")) : rule_ == Rule::src ? 16 : length_;
  width_ = uint64_t(std::ceil(std::exp(1.0) / error_));
  depth_ = uint64_t(std::ceil(std::log(1.0 / (1.0 - confidence_))));
  if (depth_ == 0) depth_ = 1;
  if (depth_ > kMaxDepth) return make_error("confidence={} needs too deep a sketch", confidence_);
  nindex_ = std::bit_ceil(uint64_t(k_) * 2);
  return ok();
}

size_t TopK::state_bytes() const {
  return sizeof(Header) + 8 * width_ * depth_ + k_ * sizeof(Entry) + k_ * max_key_ + 4 * nindex_ +
         64;
}

Result<void> TopK::init(StateRegion& region) {
  hdr_ = region.carve<Header>();
  sketch_ = region.carve<uint64_t>(width_ * depth_);
  heap_ = region.carve<Entry>(k_);
  keys_ = region.carve<char>(size_t(k_) * max_key_);
  index_ = region.carve<uint32_t>(nindex_);
  if (!hdr_ || !sketch_ || !heap_ || !keys_ || !index_) return make_error("state region too small");
  return ok();
}

// Conservative update: only the counters at the current minimum grow, to minimum + 1.
uint64_t TopK::estimate_and_add(uint64_t h) {
  const uint64_t h2 = (h >> 32) | 1;
  uint64_t* cells[kMaxDepth];
  uint64_t m = UINT64_MAX;
  for (uint64_t r = 0; r < depth_; ++r) {
    cells[r] = &sketch_[r * width_ + (h + r * h2) % width_];
    m = std::min(m, *cells[r]);
  }
  ++m;
  for (uint64_t r = 0; r < depth_; ++r)
    if (*cells[r] < m) *cells[r] = m;
  return m;
}

uint32_t* TopK::index_slot(uint64_t h, std::string_view key) {
  const uint64_t mask = nindex_ - 1;
  for (uint64_t i = h & mask;; i = (i + 1) & mask) {
    const uint32_t v = index_[i];
    if (v == 0) return &index_[i];
    const Entry& e = heap_[v - 1];
    if (e.hash == h && e.klen == key.size() &&
        std::memcmp(keys_ + size_t(e.kslot) * max_key_, key.data(), key.size()) == 0)
      return &index_[i];
  }
}

// Linear probing's backward-shift deletion: later entries of the run move up, so no
// tombstones are ever needed.
void TopK::index_erase(uint32_t* slot) {
  const uint64_t mask = nindex_ - 1;
  uint64_t i = uint64_t(slot - index_);
  index_[i] = 0;
  for (uint64_t j = (i + 1) & mask; index_[j] != 0; j = (j + 1) & mask) {
    const uint64_t home = heap_[index_[j] - 1].hash & mask;
    if (((j - home) & mask) >= ((j - i) & mask)) {
      index_[i] = index_[j];
      heap_[index_[i] - 1].islot = uint32_t(i);
      index_[j] = 0;
      i = j;
    }
  }
}

void TopK::swap_entries(uint32_t a, uint32_t b) {
  std::swap(heap_[a], heap_[b]);
  index_[heap_[a].islot] = a + 1;
  index_[heap_[b].islot] = b + 1;
}

void TopK::sift_down(uint32_t i) {
  const uint32_t n = uint32_t(hdr_->heap_size);
  for (;;) {
    uint32_t m = i;
    const uint32_t l = 2 * i + 1, r = l + 1;
    if (l < n && heap_[l].count < heap_[m].count) m = l;
    if (r < n && heap_[r].count < heap_[m].count) m = r;
    if (m == i) return;
    swap_entries(i, m);
    i = m;
  }
}

void TopK::sift_up(uint32_t i) {
  while (i > 0) {
    const uint32_t parent = (i - 1) / 2;
    if (heap_[parent].count <= heap_[i].count) return;
    swap_entries(i, parent);
    i = parent;
  }
}

void TopK::count(std::string_view key) {
  if (key.size() > max_key_) key = key.substr(0, max_key_);
  const uint64_t h = XXH3_64bits(key.data(), key.size());
  const uint64_t est = estimate_and_add(h);
  ++hdr_->n;
  uint32_t* slot = index_slot(h, key);
  if (*slot != 0) {  // already among the top: its count grew
    const uint32_t pos = *slot - 1;
    heap_[pos].count = est;
    sift_down(pos);
    return;
  }
  uint32_t pos;
  uint16_t kslot;
  if (hdr_->heap_size < k_) {
    pos = uint32_t(hdr_->heap_size++);
    kslot = uint16_t(pos);
  } else if (est > heap_[0].count) {  // it displaces the smallest of the top
    Entry& root = heap_[0];
    kslot = root.kslot;
    index_erase(&index_[root.islot]);
    slot = index_slot(h, key);  // the erase may have moved entries
    pos = 0;
  } else {
    return;
  }
  std::memcpy(keys_ + size_t(kslot) * max_key_, key.data(), key.size());
  heap_[pos] = Entry{h, est, uint16_t(key.size()), kslot, uint32_t(slot - index_)};
  *slot = pos + 1;
  if (pos == 0)
    sift_down(0);
  else
    sift_up(pos);
}

Verdict TopK::on_packet(Context&, Packet& p) {
  ++hdr_->packets;
  if (!p.is_udp()) {
    ++hdr_->no_key;
    return Verdict::to_host;
  }
  const std::span<const uint8_t> payload(p.payload(), p.hdr.payload_len);
  switch (rule_) {
    case Rule::mc_get: {
      kv::Request r;
      kv::parse_request(payload, r);
      if (r.kind != kv::Kind::get || r.nkeys == 0) {
        ++hdr_->no_key;
        break;
      }
      for (size_t i = 0; i < r.nkeys; ++i) count(r.keys[i]);
      break;
    }
    case Rule::src: {
      const uint8_t* ip = p.data() + p.hdr.l3;
      const bool v4 = p.hdr.l3_proto == L3::ipv4;
      count(std::string_view(reinterpret_cast<const char*>(ip + (v4 ? 12 : 8)), v4 ? 4 : 16));
      break;
    }
    case Rule::bytes:
      if (payload.size() < size_t(offset_) + length_) {
        ++hdr_->no_key;
        break;
      }
      count(std::string_view(reinterpret_cast<const char*>(payload.data() + offset_), length_));
      break;
  }
  return Verdict::to_host;
}

std::string TopK::render(std::string_view key) const {
  static const char* hex = "0123456789abcdef";
  std::string out;
  if (rule_ == Rule::src) {
    char buf[INET6_ADDRSTRLEN] = {};
    inet_ntop(key.size() == 4 ? AF_INET : AF_INET6, key.data(), buf, sizeof(buf));
    return buf;
  }
  for (unsigned char c : key) {
    if (rule_ == Rule::mc_get && c > ' ' && c < 0x7f && c != '\\') {
      out += char(c);
    } else if (rule_ == Rule::mc_get) {
      out += "\\x";
      out += {hex[c >> 4], hex[c & 15]};
    } else {
      out += {hex[c >> 4], hex[c & 15]};
    }
  }
  return out;
}

Result<nlohmann::json> TopK::call(std::string_view op, std::span<const std::string> args) {
  if (op == "top") {
    std::vector<const Entry*> es;
    for (uint64_t i = 0; i < hdr_->heap_size; ++i) es.push_back(&heap_[i]);
    std::sort(es.begin(), es.end(), [&](const Entry* a, const Entry* b) {
      if (a->count != b->count) return a->count > b->count;
      return std::string_view(keys_ + size_t(a->kslot) * max_key_, a->klen) <
             std::string_view(keys_ + size_t(b->kslot) * max_key_, b->klen);
    });
    nlohmann::json top = nlohmann::json::array();
    for (const Entry* e : es)
      top.push_back(
          {{"key", render(std::string_view(keys_ + size_t(e->kslot) * max_key_, e->klen))},
           {"count", e->count}});
    return nlohmann::json{{"top", top}, {"n", hdr_->n}, {"error_bound", error_ * double(hdr_->n)}};
  }
  if (op == "reset") {
    std::memset(sketch_, 0, 8 * width_ * depth_);
    std::memset(index_, 0, 4 * nindex_);
    *hdr_ = Header{};
    return nlohmann::json{{"reset", true}};
  }
  if (op == "stats")
    return nlohmann::json{{"packets", hdr_->packets},
                          {"keys", hdr_->n},  // the same count as n, by its plain name
                          {"no_key", hdr_->no_key},
                          {"n", hdr_->n},
                          {"k", k_},
                          {"width", width_},
                          {"depth", depth_},
                          {"error", error_},
                          {"confidence", confidence_},
                          {"error_bound", error_ * double(hdr_->n)}};
  return IKernel::call(op, args);
}

GAON_IKERNEL(TopK, "topk",
             "counts keys in the traffic (count-min sketch) and keeps the K heaviest; passes "
             "every packet");

}  // namespace gaon::ikernels

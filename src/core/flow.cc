#include "gaon/flow.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

#include "gaon/net.h"

namespace gaon {

bool FlowKey::operator==(const FlowKey& o) const {
  return std::memcmp(this, &o, sizeof(*this)) == 0;
}

static Result<void> parse_endpoint(std::string_view text, uint8_t& family, uint8_t* ip,
                                   uint16_t& port, std::string_view what) {
  std::string_view host, port_text;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return make_error("{} '{}': expected [IPV6]:PORT", what, printable(text));
    host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos)
      return make_error("{} '{}': expected IP:PORT", what, printable(text));
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos)
      return make_error("{} '{}': an IPv6 address goes in brackets: [IP]:PORT", what,
                        printable(text));
  }
  unsigned p = 0;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), p);
  if (ec != std::errc() || end != port_text.data() + port_text.size() || p > 65535 ||
      port_text.empty())
    return make_error("{} '{}': bad port '{}'", what, printable(text), printable(port_text));
  const std::string h(host);
  uint8_t fam = 0;
  uint8_t buf[16] = {};
  const bool bracketed = !text.empty() && text.front() == '[';
  if (!bracketed && inet_pton(AF_INET, h.c_str(), buf) == 1)
    fam = 4;
  else if (bracketed && inet_pton(AF_INET6, h.c_str(), buf) == 1)
    fam = 6;
  else
    return make_error("{} '{}': bad IP address '{}'", what, printable(text), printable(host));
  if (family != 0 && family != fam)
    return make_error("{} '{}': address family differs from the local side", what, printable(text));
  family = fam;
  std::memcpy(ip, buf, 16);
  port = static_cast<uint16_t>(p);
  return ok();
}

Result<FlowKey> FlowKey::parse(std::string_view text) {
  FlowKey k;
  const auto colon = text.find(':');
  if (colon == std::string_view::npos)
    return make_error("flow '{}': expected PROTO:IP:PORT[,REMOTE_IP:REMOTE_PORT]", printable(text));
  const auto proto = text.substr(0, colon);
  if (proto == "udp")
    k.proto = net::kProtoUdp;
  else if (proto == "tcp")
    k.proto = net::kProtoTcp;
  else
    return make_error("flow '{}': protocol must be udp or tcp, not '{}'", printable(text),
                      printable(proto));
  std::string_view rest = text.substr(colon + 1);
  std::string_view remote;
  if (const auto comma = rest.find(','); comma != std::string_view::npos) {
    remote = rest.substr(comma + 1);
    rest = rest.substr(0, comma);
    if (remote.empty()) return make_error("flow '{}': nothing after the comma", printable(text));
  }
  if (auto r = parse_endpoint(rest, k.family, k.local_ip, k.local_port, "flow"); !r)
    return Error{r.error()};
  if (!remote.empty()) {
    if (auto r = parse_endpoint(remote, k.family, k.remote_ip, k.remote_port, "remote"); !r)
      return Error{r.error()};
    k.wildcard = 0;
  }
  return k;
}

static std::string ip_string(uint8_t family, const uint8_t* ip) {
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(family == 4 ? AF_INET : AF_INET6, ip, buf, sizeof(buf));
  return family == 4 ? std::string(buf) : "[" + std::string(buf) + "]";
}

std::string FlowKey::to_string() const {
  std::string s = fmt::format("{}:{}:{}", proto == net::kProtoTcp ? "tcp" : "udp",
                              ip_string(family, local_ip), local_port);
  if (!wildcard) s += fmt::format(",{}:{}", ip_string(family, remote_ip), remote_port);
  return s;
}

FlowKey flow_key_exact(const Packet& p) {
  FlowKey k;
  const uint8_t* ip = p.data() + p.hdr.l3;
  const uint8_t* l4 = p.data() + p.hdr.l4;
  k.proto = p.hdr.l4_proto == L4::udp ? net::kProtoUdp : net::kProtoTcp;
  k.wildcard = 0;
  const bool in = p.dir == Direction::ingress;
  const uint16_t sport = net::load16(l4), dport = net::load16(l4 + 2);
  k.local_port = in ? dport : sport;
  k.remote_port = in ? sport : dport;
  if (p.hdr.l3_proto == L3::ipv4) {
    k.family = 4;
    std::memcpy(k.local_ip, ip + (in ? net::ip4::dst : net::ip4::src), 4);
    std::memcpy(k.remote_ip, ip + (in ? net::ip4::src : net::ip4::dst), 4);
  } else {
    k.family = 6;
    std::memcpy(k.local_ip, ip + (in ? net::ip6::dst : net::ip6::src), 16);
    std::memcpy(k.remote_ip, ip + (in ? net::ip6::src : net::ip6::dst), 16);
  }
  return k;
}

Result<std::unique_ptr<FlowTable>> FlowTable::create(uint32_t capacity) {
  if (capacity == 0 || capacity > (1u << 24))
    return make_error("flow table: capacity must be 1..{}", 1u << 24);
  std::unique_ptr<FlowTable> t(new FlowTable());
  uint64_t slots = 2;
  while (slots < uint64_t{capacity} * 2) slots <<= 1;
  t->slots_.resize(slots);
  t->mask_ = slots - 1;
  t->capacity_ = capacity;
  return t;
}

// A wildcard key carries no remote side (and no stray padding): every entry point uses
// the same normal form, so a key that add() accepted is found and removed by itself.
static FlowKey normalised(FlowKey k) {
  if (k.wildcard) {
    k.wildcard = 1;
    k.remote_port = 0;
    std::memset(k.remote_ip, 0, sizeof(k.remote_ip));
  }
  k.pad_ = 0;
  return k;
}

uint64_t FlowTable::hash(const FlowKey& k) {
  uint64_t w[5];
  std::memcpy(w, &k, sizeof(w));
  uint64_t h = 0x9e3779b97f4a7c15ull;
  for (uint64_t x : w) {
    h ^= x;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 31;
  }
  return h;
}

const FlowEntry* FlowTable::probe(const FlowKey& k) const {
  for (uint64_t i = hash(k) & mask_;; i = (i + 1) & mask_) {
    const Slot& s = slots_[i];
    if (!s.used) return nullptr;
    if (s.e.key == k) return &s.e;
  }
}

const FlowEntry* FlowTable::find(const FlowKey& key) const { return probe(normalised(key)); }

const FlowEntry* FlowTable::lookup(const Packet& p) const {
  if (size_ == 0) return nullptr;
  FlowKey k = flow_key_exact(p);
  if (exact_entries_ != 0) {
    if (const FlowEntry* e = probe(k)) return e;
  }
  k.wildcard = 1;
  k.remote_port = 0;
  std::memset(k.remote_ip, 0, sizeof(k.remote_ip));
  return probe(k);
}

Result<uint32_t> FlowTable::add(const FlowKey& key, uint32_t instance) {
  if (key.proto != net::kProtoUdp && key.proto != net::kProtoTcp)
    return make_error("flow {}: protocol must be udp or tcp", key.to_string());
  if (key.family != 4 && key.family != 6)
    return make_error("flow {}: bad address family", key.to_string());
  const FlowKey k = normalised(key);
  if (probe(k) != nullptr) return make_error("flow {} is already attached", k.to_string());
  if (size_ >= capacity_) return make_error("flow table is full ({} flows)", capacity_);
  uint64_t i = hash(k) & mask_;
  while (slots_[i].used) i = (i + 1) & mask_;
  slots_[i].used = true;
  slots_[i].e = FlowEntry{k, instance, next_flow_id_++};
  if (next_flow_id_ == 0) next_flow_id_ = 1;
  ++size_;
  if (!k.wildcard) ++exact_entries_;
  return slots_[i].e.flow_id;
}

bool FlowTable::remove(const FlowKey& key) {
  const FlowKey k = normalised(key);
  uint64_t i = hash(k) & mask_;
  for (;; i = (i + 1) & mask_) {
    if (!slots_[i].used) return false;
    if (slots_[i].e.key == k) break;
  }
  if (!k.wildcard) --exact_entries_;
  --size_;
  // Backward-shift deletion keeps every probe chain intact without tombstones.
  uint64_t hole = i;
  for (uint64_t j = (i + 1) & mask_; slots_[j].used; j = (j + 1) & mask_) {
    const uint64_t home = hash(slots_[j].e.key) & mask_;
    // Move j into the hole if its home is not cyclically within (hole, j].
    const bool between = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
    if (!between) {
      slots_[hole] = slots_[j];
      hole = j;
    }
  }
  slots_[hole].used = false;
  return true;
}

size_t FlowTable::remove_instance(uint32_t instance) {
  size_t n = 0;
  for (const FlowEntry& e : entries()) {
    if (e.instance == instance && remove(e.key)) ++n;
  }
  return n;
}

std::vector<FlowEntry> FlowTable::entries() const {
  std::vector<FlowEntry> out;
  for (const Slot& s : slots_)
    if (s.used) out.push_back(s.e);
  return out;
}

}  // namespace gaon

// Fuzz target: kvcache's memcached parsers (requests and get replies, ASCII and binary).
// Invariants: no crash, no read outside the datagram; keys and values are views inside
// it; a get request's keys are within memcached's limits when it is servable.
#include <cstdint>
#include <cstdlib>

#include "kvcache/mc_proto.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace gaon::kv;
  const std::span<const uint8_t> in(data, size);
  auto inside = [&](std::string_view v) {
    return v.empty() || (reinterpret_cast<const uint8_t*>(v.data()) >= data &&
                         reinterpret_cast<const uint8_t*>(v.data()) + v.size() <= data + size);
  };
  Request r;
  parse_request(in, r);
  if (r.nkeys > kMaxKeys) std::abort();
  for (size_t i = 0; i < r.nkeys; ++i) {
    if (!inside(r.keys[i])) std::abort();
    if (r.kind == Kind::get && r.issue == ReqIssue::none &&
        (r.keys[i].empty() || r.keys[i].size() > kMemcachedMaxKey))
      std::abort();
  }
  Response resp;
  parse_get_response(in, resp);
  if (resp.nvalues > kMaxKeys) std::abort();
  for (size_t i = 0; i < resp.nvalues; ++i)
    if (!inside(resp.values[i].key) || !inside(resp.values[i].data)) std::abort();
  return 0;
}

// Fuzz target: typed ikernel parameters ("key=value" lines against a declared spec) and
// each value parser on its own. Invariants: no crash; a success yields values of the
// declared types within bounds.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "gaon/params.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace gaon;
  static const std::vector<ParamSpec> spec = {
      {"capacity", ParamType::size, "64M", "bytes", 1024, 1e12},
      {"count", ParamType::u64, "10", "n", 0, 1000},
      {"ratio", ParamType::f64, "0.5", "r", 0, 1},
      {"on", ParamType::boolean, "false", "b"},
      {"name", ParamType::string, "", "s"},
  };
  const std::string in(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> kv;
  size_t start = 0;
  for (size_t i = 0; i <= in.size(); ++i) {
    if (i == in.size() || in[i] == '\n') {
      kv.push_back(in.substr(start, i - start));
      start = i + 1;
    }
  }
  auto p = Params::parse(spec, kv);
  if (p) {
    const uint64_t cap = p->u64("capacity");
    if (cap < 1024 || cap > 1e12) std::abort();
    if (p->u64("count") > 1000) std::abort();
    const double r = p->f64("ratio");
    if (!(r >= 0 && r <= 1)) std::abort();
    (void)p->flag("on");
    (void)p->str("name");
    (void)p->describe();
  } else if (p.error().empty()) {
    std::abort();  // every error says what is wrong
  }
  for (auto t : {ParamType::u64, ParamType::size, ParamType::boolean, ParamType::f64})
    (void)parse_param_value(t, in);
  return 0;
}

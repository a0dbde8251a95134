// Fuzz target: gaond's config file (TOML, tools/gaond/config.h). Invariants: no crash, no
// exception out of it; an error names the file and says something; a good file's settings
// are each known options in command-line form, and its instances have a name and a type.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto cf = gaond::parse_config(text, "fuzz.conf");
  if (!cf) {
    if (!cf.error().starts_with("fuzz.conf")) std::abort();
    return 0;
  }
  for (const auto& s : cf->settings)
    for (const auto& a : s.args)
      if (!a.starts_with("--" + s.key)) std::abort();
  for (const auto& i : cf->instances)
    if (i.name.empty() || i.type.empty()) std::abort();
  return 0;
}

// gaond's config file (TOML): every top-level key is a long option of gaond (options.h)
// without its dashes, a list stands for a repeated option, and [[instance]] tables are the
// instances to create at start. packaging/gaond.conf is the annotated default.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "gaon/result.h"
#include "options.h"

namespace gaond {

struct Setting {
  std::string key;
  int line = 0;
  std::vector<std::string> values;  // as the file gives them (a list: several)
  std::vector<std::string> args;    // as on a command line: {"--key=value", ...}
};

struct ConfigFile {
  std::string path;
  std::vector<Setting> settings;  // in the file's order
  std::vector<InstanceSpec> instances;
  // The settings as command-line arguments, in order.
  std::vector<std::string> args() const;
};

// Reads and checks `path`: syntax, known keys, each value as its option takes it, and the
// [[instance]] tables' keys and names. Errors name the file and the line at fault:
// "FILE:LINE: ...".
gaon::Result<ConfigFile> load_config(const std::string& path);
// The same for text already read; `path` names it in errors.
gaon::Result<ConfigFile> parse_config(const std::string& text, const std::string& path);

}  // namespace gaond

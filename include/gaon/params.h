// Typed, validated ikernel parameters.
//
// An ikernel type declares its parameters (name, type, default, bounds, help). What the
// user gives as "key=value" strings is checked against that declaration once, at
// configure time: an unknown key, a malformed value or one out of bounds is a clear error
// then, never a surprise on the datapath.
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "gaon/result.h"

namespace gaon {

enum class ParamType : uint8_t {
  u64,      // decimal or 0x-hex integer
  size,     // bytes, with an optional K/M/G (KiB/MiB/GiB) suffix: "64M"
  boolean,  // true/false/1/0/yes/no/on/off
  f64,      // floating point
  string,
};
std::string_view to_string(ParamType t);

struct ParamSpec {
  std::string name;
  ParamType type = ParamType::u64;
  std::string default_value;  // parsed like user input; "" for a string means empty
  std::string help;
  double min = 0;  // bounds for numeric types
  double max = std::numeric_limits<double>::max();
};

class Params {
 public:
  using Value = std::variant<uint64_t, bool, double, std::string>;

  // Validates `given` ("key=value" each) against `spec`. Later keys override earlier ones.
  static Result<Params> parse(std::span<const ParamSpec> spec, std::span<const std::string> given);

  uint64_t u64(std::string_view name) const;  // u64 and size parameters
  bool flag(std::string_view name) const;
  double f64(std::string_view name) const;
  const std::string& str(std::string_view name) const;
  bool was_given(std::string_view name) const;

  // "k=v" pairs of every parameter, defaults included (for logs and stats).
  std::vector<std::string> describe() const;

 private:
  const Value& get(std::string_view name) const;
  std::map<std::string, Value, std::less<>> values_;
  std::map<std::string, std::string, std::less<>> text_;
  std::vector<std::string> given_;
};

// Parses one value of `type` (exposed for tests and the CLI). Error messages name the value.
Result<Params::Value> parse_param_value(ParamType type, std::string_view text);

}  // namespace gaon

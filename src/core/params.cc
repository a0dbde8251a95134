#include "gaon/params.h"

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace gaon {

std::string_view to_string(ParamType t) {
  switch (t) {
    case ParamType::u64:
      return "integer";
    case ParamType::size:
      return "size";
    case ParamType::boolean:
      return "bool";
    case ParamType::f64:
      return "number";
    case ParamType::string:
      return "string";
  }
  return "?";
}

static Result<uint64_t> parse_u64(std::string_view t) {
  uint64_t v = 0;
  int base = 10;
  std::string_view digits = t;
  if (digits.size() > 2 && digits[0] == '0' && (digits[1] == 'x' || digits[1] == 'X')) {
    base = 16;
    digits.remove_prefix(2);
  }
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v, base);
  if (digits.empty() || ec == std::errc::invalid_argument || end != digits.data() + digits.size())
    return make_error("'{}' is not a non-negative integer", t);
  if (ec == std::errc::result_out_of_range) return make_error("'{}' is too large", t);
  return v;
}

Result<Params::Value> parse_param_value(ParamType type, std::string_view text) {
  switch (type) {
    case ParamType::u64: {
      auto v = parse_u64(text);
      if (!v) return Error{v.error()};
      return Params::Value{*v};
    }
    case ParamType::size: {
      std::string_view num = text;
      uint64_t mult = 1;
      auto strip = [&](std::string_view suffix, uint64_t m) {
        if (num.size() > suffix.size() && num.substr(num.size() - suffix.size()) == suffix) {
          num.remove_suffix(suffix.size());
          mult = m;
          return true;
        }
        return false;
      };
      strip("KiB", 1ull << 10) || strip("MiB", 1ull << 20) || strip("GiB", 1ull << 30) ||
          strip("K", 1ull << 10) || strip("M", 1ull << 20) || strip("G", 1ull << 30) ||
          strip("k", 1ull << 10) || strip("m", 1ull << 20) || strip("g", 1ull << 30) ||
          strip("B", 1);
      auto v = parse_u64(num);
      if (!v) return make_error("'{}' is not a size (bytes, optionally with K, M or G)", text);
      if (*v > UINT64_MAX / mult) return make_error("'{}' is too large", text);
      return Params::Value{*v * mult};
    }
    case ParamType::boolean:
      if (text == "1" || text == "true" || text == "yes" || text == "on")
        return Params::Value{true};
      if (text == "0" || text == "false" || text == "no" || text == "off")
        return Params::Value{false};
      return make_error("'{}' is not a boolean (true/false, yes/no, on/off, 1/0)", text);
    case ParamType::f64: {
      const std::string s(text);
      char* end = nullptr;
      errno = 0;
      const double d = std::strtod(s.c_str(), &end);
      if (s.empty() || end != s.c_str() + s.size() || errno == ERANGE || !std::isfinite(d))
        return make_error("'{}' is not a number", text);
      return Params::Value{d};
    }
    case ParamType::string:
      return Params::Value{std::string(text)};
  }
  return make_error("unknown parameter type");
}

static Result<void> check_bounds(const ParamSpec& s, const Params::Value& v,
                                 std::string_view text) {
  double x;
  if (auto* u = std::get_if<uint64_t>(&v))
    x = static_cast<double>(*u);
  else if (auto* d = std::get_if<double>(&v))
    x = *d;
  else
    return ok();
  if (x < s.min || x > s.max)
    return make_error("parameter {}={}: out of range [{}, {}]", s.name, text, s.min, s.max);
  return ok();
}

Result<Params> Params::parse(std::span<const ParamSpec> spec, std::span<const std::string> given) {
  Params p;
  auto find = [&](std::string_view name) -> const ParamSpec* {
    for (const auto& s : spec)
      if (s.name == name) return &s;
    return nullptr;
  };
  auto known = [&] {
    std::string names;
    for (const auto& s : spec) names += (names.empty() ? "" : ", ") + s.name;
    return names.empty() ? std::string("none") : names;
  };
  for (const auto& s : spec) {
    auto v = parse_param_value(s.type, s.default_value);
    if (!v) return make_error("parameter {}: bad default: {}", s.name, v.error());
    p.values_[s.name] = *v;
    p.text_[s.name] = s.default_value;
  }
  for (const auto& kv : given) {
    const auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0)
      return make_error("parameter '{}': expected key=value", kv);
    const std::string_view key(kv.data(), eq);
    const std::string_view text(kv.data() + eq + 1, kv.size() - eq - 1);
    const ParamSpec* s = find(key);
    if (s == nullptr) return make_error("unknown parameter '{}' (known: {})", key, known());
    auto v = parse_param_value(s->type, text);
    if (!v) return make_error("parameter {}: {}", key, v.error());
    if (auto b = check_bounds(*s, *v, text); !b) return Error{b.error()};
    p.values_[s->name] = *v;
    p.text_[s->name] = std::string(text);
    p.given_.push_back(s->name);
  }
  return p;
}

const Params::Value& Params::get(std::string_view name) const {
  auto it = values_.find(name);
  if (it == values_.end()) {
    // A type asking for a parameter it did not declare is a bug in the type, found by its
    // first test; it is never a user error.
    std::fprintf(stderr, "gaon: ikernel asked for undeclared parameter '%.*s'\n",
                 static_cast<int>(name.size()), name.data());
    std::abort();
  }
  return it->second;
}

uint64_t Params::u64(std::string_view name) const { return std::get<uint64_t>(get(name)); }
bool Params::flag(std::string_view name) const { return std::get<bool>(get(name)); }
double Params::f64(std::string_view name) const { return std::get<double>(get(name)); }
const std::string& Params::str(std::string_view name) const {
  return std::get<std::string>(get(name));
}
bool Params::was_given(std::string_view name) const {
  for (const auto& g : given_)
    if (g == name) return true;
  return false;
}

std::vector<std::string> Params::describe() const {
  std::vector<std::string> out;
  for (const auto& [k, v] : text_) out.push_back(k + "=" + v);
  return out;
}

}  // namespace gaon

#include "config.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>

#include <fmt/core.h>
#include <toml.hpp>

namespace gaond {
namespace {

// The options a config file must not carry: they are about one run of the command.
const std::set<std::string> kCommandOnly = {"config", "check-config", "list", "help", "version"};

std::string first_line(std::string s) {
  if (auto nl = s.find('\n'); nl != std::string::npos) s.resize(nl);
  if (s.starts_with("[error] ")) s.erase(0, 8);
  return s;
}

// A scalar as an option's value; "" and false for what is not one.
gaon::Result<std::string> scalar(const toml::value& v) {
  switch (v.type()) {
    case toml::value_t::string:
      return std::string(v.as_string());
    case toml::value_t::integer:
      return std::to_string(v.as_integer());
    case toml::value_t::floating:
      return fmt::format("{}", v.as_floating());
    case toml::value_t::boolean:
      return std::string(v.as_boolean() ? "true" : "false");
    default:
      return gaon::Error{"expected a string, a number or true/false"};
  }
}

gaon::Result<std::vector<std::string>> values(const toml::value& v) {
  std::vector<std::string> out;
  if (v.is_array()) {
    for (const auto& e : v.as_array()) {
      auto s = scalar(e);
      if (!s) return gaon::Error{s.error()};
      out.push_back(*s);
    }
  } else {
    auto s = scalar(v);
    if (!s) return gaon::Error{s.error()};
    out.push_back(*s);
  }
  return out;
}

int line_of(const toml::value& v) { return int(v.location().line()); }

gaon::Result<InstanceSpec> instance_of(const std::string& path, const toml::value& t) {
  InstanceSpec s;
  s.line = line_of(t);
  auto at = [&](const toml::value& v, const std::string& why) {
    return gaon::Error{fmt::format("{}:{}: {}", path, line_of(v), why)};
  };
  if (!t.is_table()) return at(t, "instance: expected a table ([[instance]])");
  std::vector<std::pair<std::string, toml::value>> keys(t.as_table().begin(), t.as_table().end());
  std::sort(keys.begin(), keys.end(),
            [](const auto& a, const auto& b) { return line_of(a.second) < line_of(b.second); });
  for (const auto& kv : keys) {
    const std::string& k = kv.first;  // (not a structured binding: lambdas below use them)
    const toml::value& v = kv.second;
    if (k == "param" && v.is_table()) {
      for (const auto& [pk, pv] : v.as_table()) {
        auto s1 = scalar(pv);
        if (!s1) return at(pv, "param." + pk + ": " + s1.error());
        s.params.push_back(pk + "=" + *s1);
      }
      std::sort(s.params.begin(), s.params.end());
      continue;
    }
    auto vs = values(v);
    if (!vs) return at(v, k + ": " + vs.error());
    auto one = [&](std::string* out) -> std::optional<gaon::Error> {
      if (vs->size() != 1) return at(v, k + ": expected one value");
      *out = vs->front();
      return std::nullopt;
    };
    auto number = [&](auto* out, uint64_t lo, uint64_t hi) -> std::optional<gaon::Error> {
      if (!v.is_integer() || v.as_integer() < int64_t(lo) || uint64_t(v.as_integer()) > hi)
        return at(v, fmt::format("{}: expected a whole number in {}..{}", k, lo, hi));
      *out = decltype(+*out)(v.as_integer());
      return std::nullopt;
    };
    std::optional<gaon::Error> e;
    if (k == "name")
      e = one(&s.name);
    else if (k == "ikernel")
      e = one(&s.type);
    else if (k == "flow")
      s.flows = *vs;
    else if (k == "param")
      s.params = *vs;
    else if (k == "state-quota")
      e = one(&s.quota);
    else if (k == "weight")
      e = number(&s.weight, 1, 1000);
    else if (k == "rate-bps")
      e = number(&s.rate_bps, 0, uint64_t(INT64_MAX));
    else
      e = at(v, fmt::format("instance: unknown key '{}' (name, ikernel, flow, param, "
                            "state-quota, weight, rate-bps)",
                            k));
    if (e) return *e;
  }
  if (s.name.empty()) return at(t, "instance: needs a name (name = \"...\")");
  if (s.type.empty()) return at(t, fmt::format("instance '{}': needs ikernel = TYPE", s.name));
  return s;
}

}  // namespace

std::vector<std::string> ConfigFile::args() const {
  std::vector<std::string> out;
  for (const auto& s : settings) out.insert(out.end(), s.args.begin(), s.args.end());
  return out;
}

gaon::Result<ConfigFile> load_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return gaon::Error{fmt::format("{}: cannot be read: {}", path, std::strerror(errno))};
  std::ostringstream text;
  text << in.rdbuf();
  return parse_config(text.str(), path);
}

gaon::Result<ConfigFile> parse_config(const std::string& text, const std::string& path) {
  toml::value root;
  try {
    std::istringstream in(text);
    root = toml::parse(in, path);
  } catch (const toml::exception& e) {
    return gaon::Error{fmt::format("{}:{}: {}", path, e.location().line(), first_line(e.what()))};
  } catch (const std::exception& e) {  // cannot be opened
    return gaon::Error{fmt::format("{}: {}", path, first_line(e.what()))};
  }
  ConfigFile cf{.path = path};
  std::vector<std::pair<std::string, toml::value>> keys(root.as_table().begin(),
                                                        root.as_table().end());
  std::sort(keys.begin(), keys.end(),
            [](const auto& a, const auto& b) { return line_of(a.second) < line_of(b.second); });
  std::set<std::string> names;
  CLI::App app;
  Options scratch;
  add_options(app, scratch);
  for (const auto& [k, v] : keys) {
    const int line = line_of(v);
    auto at = [&](const std::string& why) {
      return gaon::Error{fmt::format("{}:{}: {}", path, line, why)};
    };
    if (k == "instance") {
      if (!v.is_array()) return at("instance: expected [[instance]] tables");
      for (const auto& t : v.as_array()) {
        auto s = instance_of(path, t);
        if (!s) return gaon::Error{s.error()};
        if (!names.insert(s->name).second)
          return gaon::Error{
              fmt::format("{}:{}: instance name '{}' is given twice", path, s->line, s->name)};
        cf.instances.push_back(std::move(*s));
      }
      continue;
    }
    if (kCommandOnly.count(k)) return at(fmt::format("'{}' belongs on the command line", k));
    // The option must exist and take the value: checked on a scratch set of options
    // (each parse starts afresh).
    const CLI::Option* opt = app.get_option_no_throw("--" + k);
    if (!opt || k.size() < 2) return at(fmt::format("unknown setting '{}' (see gaond --help)", k));
    auto vs = values(v);
    if (!vs) return at(k + ": " + vs.error());
    Setting s{.key = k, .line = line, .values = *vs};
    if (opt->get_expected_max() == 0) {  // a flag: true or false
      if (!v.is_boolean()) return at(k + ": expected true or false");
      s.args.push_back("--" + k + (v.as_boolean() ? "" : "=false"));
    } else {
      if (vs->size() > 1 && opt->get_multi_option_policy() != CLI::MultiOptionPolicy::TakeAll)
        return at(k + ": takes one value, not a list");
      for (const auto& x : *vs) s.args.push_back("--" + k + "=" + x);
    }
    try {
      std::vector<std::string> rev(s.args.rbegin(), s.args.rend());
      app.parse(rev);
    } catch (const CLI::ParseError& e) {
      return at(fmt::format("{}: {}", k, first_line(e.what())));
    }
    cf.settings.push_back(std::move(s));
  }
  return cf;
}

}  // namespace gaond

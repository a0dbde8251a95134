// gaonctl: the operator's command line for gaond's control socket.
//
//   gaonctl types | list | stats [ID] | create TYPE [-p k=v]... | destroy ID
//           attach ID --flow udp:IP:PORT | detach ID --flow udp:IP:PORT | call ID OP [ARG]...
// A call argument "-" is read from standard input (one line each), so that a secret (auth's
// set_key) stays off the command line.
// Tables for people, --json for scripts. Errors are one line on stderr, exit status 1
// (2 for bad arguments).
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include <fmt/core.h>
#include <CLI/CLI.hpp>

#include "gaon/control.h"

namespace {

int fail(const std::string& why) {
  fmt::print(stderr, "gaonctl: error: {}\n", why);
  return 1;
}

std::string counters_line(const nlohmann::json& c) {
  std::string out;
  for (const char* k : {"rx", "to_host", "to_wire", "dropped", "emitted"}) {
    if (!c.contains(k)) continue;
    out += fmt::format("{}{}={}", out.empty() ? "" : " ", k, c[k].dump());
  }
  return out.empty() ? c.dump() : out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"gaonctl: manage gaond's ikernel instances"};
  app.set_version_flag("--version", "gaonctl " GAON_VERSION);
  app.require_subcommand(1);
  std::string path = gaon::control::kDefaultPath;
  bool json = false;
  app.add_option("--control", path, "gaond's control socket")->capture_default_str();
  app.add_flag("--json", json, "print the raw JSON result");

  auto* types = app.add_subcommand("types", "ikernel types gaond knows, with parameters and ops");
  auto* list =
      app.add_subcommand("list", "instances (yours; root: all) with owner, flows, counters");
  uint32_t id = 0;
  auto* stats = app.add_subcommand("stats", "datapath stats, or one instance's");
  stats->add_option("instance", id, "instance id");
  std::string type, quota = "64M";
  std::vector<std::string> params;
  uint32_t weight = 1;
  uint64_t rate = 0;
  auto* create = app.add_subcommand("create", "create an instance (it persists until destroyed)");
  create->add_option("type", type, "ikernel type (see types)")->required();
  create->add_option("-p,--param", params, "parameter key=value (repeatable)");
  create->add_option("--quota", quota, "state bytes")->capture_default_str();
  create->add_option("--weight", weight, "DRR weight on the wire, 1..1000")->capture_default_str();
  create->add_option("--rate-bps", rate, "rate limit of its replies, bits/s (0: none)");
  auto* destroy = app.add_subcommand("destroy", "destroy an instance and its flows");
  destroy->add_option("instance", id, "instance id")->required();
  std::string flow;
  auto* attach = app.add_subcommand("attach", "attach a flow to an instance (root)");
  attach->add_option("instance", id, "instance id")->required();
  attach->add_option("--flow", flow, "udp:IP:PORT")->required();
  auto* detach = app.add_subcommand("detach", "detach a flow from an instance");
  detach->add_option("instance", id, "instance id")->required();
  detach->add_option("--flow", flow, "udp:IP:PORT")->required();
  std::string op;
  std::vector<std::string> args;
  auto* call = app.add_subcommand("call", "run a state operation of an instance (e.g. stats)");
  call->add_option("instance", id, "instance id")->required();
  call->add_option("op", op, "operation name")->required();
  call->add_option("args", args, "its arguments; '-' reads one from standard input (one line)");
  CLI11_PARSE(app, argc, argv);

  for (std::string& a : args) {
    if (a != "-") continue;
    if (!std::getline(std::cin, a)) {
      fmt::print(stderr,
                 "gaonctl: error: call: an argument '-' is read from standard input, "
                 "which had no line for it\n");
      return 2;
    }
    if (!a.empty() && a.back() == '\r') a.pop_back();
  }

  auto client = gaon::control::Client::connect(path);
  if (!client) return fail(client.error());

  gaon::Result<nlohmann::json> r = gaon::make_error("no command");
  if (types->parsed())
    r = client->call("types");
  else if (list->parsed())
    r = client->call("list");
  else if (stats->parsed())
    r = stats->count("instance") ? client->call("stats", {{"instance", id}})
                                 : client->call("stats");
  else if (create->parsed())
    r = client->call("create", {{"type", type},
                                {"params", params},
                                {"quota", quota},
                                {"weight", weight},
                                {"rate_bps", rate},
                                {"persist", true}});
  else if (destroy->parsed())
    r = client->call("destroy", {{"instance", id}});
  else if (attach->parsed())
    r = client->call("attach", {{"instance", id}, {"flow", flow}});
  else if (detach->parsed())
    r = client->call("detach", {{"instance", id}, {"flow", flow}});
  else if (call->parsed())
    r = client->call("call", {{"instance", id}, {"name", op}, {"args", args}});
  if (!r) return fail(r.error());

  const nlohmann::json& j = *r;
  if (json) {
    fmt::print("{}\n", j.dump(2));
    return 0;
  }
  if (types->parsed()) {
    for (const auto& t : j) {
      fmt::print("{:<12} {}\n", t["name"].get<std::string>(), t["description"].get<std::string>());
      for (const auto& p : t["params"])
        fmt::print("    -p {}=<{}> (default {}) {}\n", p["name"].get<std::string>(),
                   p["type"].get<std::string>(), p["default"].get<std::string>(),
                   p["help"].get<std::string>());
      for (const auto& o : t["ops"])
        fmt::print("    call {} {}  {}\n", o["name"].get<std::string>(),
                   o["args"].get<std::string>(), o["help"].get<std::string>());
    }
  } else if (list->parsed()) {
    fmt::print("{:>4}  {:>6}  {:<12} {:<8} {:<28} {}\n", "ID", "OWNER", "TYPE", "KEPT", "FLOWS",
               "COUNTERS");
    for (const auto& i : j) {
      std::string flows;
      for (const auto& f : i["flows"]) flows += (flows.empty() ? "" : ",") + f.get<std::string>();
      fmt::print("{:>4}  {:>6}  {:<12} {:<8} {:<28} {}\n", i["instance"].get<uint32_t>(),
                 i["owner"].get<uint32_t>(), i["type"].get<std::string>(),
                 i["persist"].get<bool>() ? "persist" : "session", flows.empty() ? "-" : flows,
                 counters_line(i.value("counters", nlohmann::json::object())));
    }
  } else if (create->parsed()) {
    fmt::print("{}\n", j["instance"].get<uint32_t>());
  } else if (attach->parsed() || destroy->parsed() || detach->parsed()) {
    fmt::print("ok\n");
  } else {
    fmt::print("{}\n", j.dump(2));
  }
  return 0;
}

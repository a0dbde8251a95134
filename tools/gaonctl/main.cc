// gaonctl: the operator's command line for gaond's control socket.
//
//   gaonctl types | list | stats [ID] | create TYPE [-p k=v]... | destroy ID
//           attach ID --flow udp:IP:PORT | detach ID --flow udp:IP:PORT | call ID OP [ARG]...
//   gaonctl stats [ID] --watch N [--count K]
// A call argument "-" is read from standard input (one line each), so that a secret (auth's
// set_key) stays off the command line.
// stats --watch N refreshes every N seconds, like top: rates per second from successive
// snapshots, the datapath's (wire and host rx/tx) and each instance's (rx, to_host, to_wire,
// dropped, emitted; ID: only that one). On a terminal the screen is cleared between
// refreshes, otherwise each refresh is plain lines; --json prints one JSON object per
// refresh, on one line. --count K stops after K refreshes; Ctrl-C ends it (exit status 0).
// Tables for people, --json for scripts (every command; --json may come before or after
// the command). Errors are one line on stderr, exit status 1 (2 for bad arguments).
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <optional>
#include <string>
#include <thread>
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

// stats --watch: rates from two snapshots of "stats".

volatile sig_atomic_t g_stop = 0;
void on_stop(int) { g_stop = 1; }

// Ctrl-C (and SIGTERM) only set a flag: the wait between refreshes ends early and the loop
// ends cleanly. No SA_RESTART, so a sleep or a read in progress returns at once.
void catch_stop_signals() {
  struct sigaction sa = {};
  sa.sa_handler = on_stop;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

// Sleeps until `until` or a stop signal.
void sleep_until(std::chrono::steady_clock::time_point until) {
  while (!g_stop) {
    const auto left = until - std::chrono::steady_clock::now();
    if (left <= std::chrono::steady_clock::duration::zero()) return;
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
    timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
    nanosleep(&ts, nullptr);
  }
}

// A positive number of seconds (at most a day), or nullopt.
std::optional<double> parse_seconds(const std::string& s) {
  if (s.empty()) return std::nullopt;
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (errno != 0 || end != s.c_str() + s.size() || !std::isfinite(v) || v <= 0 || v > 86400)
    return std::nullopt;
  return v;
}

// A positive whole number, or nullopt.
std::optional<uint64_t> parse_count(const std::string& s) {
  if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos || s.size() > 18)
    return std::nullopt;
  const uint64_t v = std::stoull(s);
  if (v == 0) return std::nullopt;
  return v;
}

// The growth of counter `k` of `a` into `b` per second over `dt` seconds. A counter that went
// down (an instance destroyed and another made with its id) counts from zero.
double rate(const nlohmann::json& a, const nlohmann::json& b, const char* k, double dt) {
  const uint64_t x = a.is_object() ? a.value(k, uint64_t{0}) : 0;
  const uint64_t y = b.is_object() ? b.value(k, uint64_t{0}) : 0;
  const uint64_t d = y >= x ? y - x : y;
  return std::round(static_cast<double>(d) / dt * 10) / 10;  // 0.1/s is enough for people
}

constexpr const char* kInstanceRates[] = {"rx", "to_host", "to_wire", "dropped", "emitted"};

// The rates between snapshots `prev` and `cur` of "stats", `dt` seconds apart: the
// datapath's and those of each instance in both (only `only`, when given).
nlohmann::json rates(const nlohmann::json& prev, const nlohmann::json& cur, double dt,
                     std::optional<uint32_t> only) {
  const nlohmann::json none = nlohmann::json::object();
  auto part = [&](const nlohmann::json& j, const char* k) -> const nlohmann::json& {
    return j.contains(k) ? j[k] : none;
  };
  nlohmann::json out = {{"interval_s", std::round(dt * 1000) / 1000},
                        {"datapath",
                         {{"wire_rx", rate(part(prev, "wire"), part(cur, "wire"), "rx", dt)},
                          {"wire_tx", rate(part(prev, "wire"), part(cur, "wire"), "tx", dt)},
                          {"host_rx", rate(part(prev, "host"), part(cur, "host"), "rx", dt)},
                          {"host_tx", rate(part(prev, "host"), part(cur, "host"), "tx", dt)}}}};
  nlohmann::json insts = nlohmann::json::array();
  for (const auto& i : part(cur, "instances")) {
    const uint32_t id = i.value("id", 0u);
    if (only && id != *only) continue;
    const nlohmann::json* before = nullptr;
    for (const auto& p : part(prev, "instances"))
      if (p.value("id", 0u) == id && p.value("type", "") == i.value("type", "")) before = &p;
    if (before == nullptr) continue;  // new since the last snapshot: from the next one on
    nlohmann::json r = {{"instance", id}, {"type", i.value("type", "")}};
    for (const char* k : kInstanceRates)
      r[k] = rate(part(*before, "counters"), part(i, "counters"), k, dt);
    insts.push_back(r);
  }
  out["instances"] = insts;
  return out;
}

void print_rates(const nlohmann::json& r, double every) {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char when[32];
  std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
  const auto& d = r["datapath"];
  fmt::print("gaonctl stats --watch {}: {}, rates per second over the last {:.2f} s\n", every, when,
             r["interval_s"].get<double>());
  fmt::print("datapath  wire rx {:.1f} tx {:.1f}  host rx {:.1f} tx {:.1f}\n",
             d["wire_rx"].get<double>(), d["wire_tx"].get<double>(), d["host_rx"].get<double>(),
             d["host_tx"].get<double>());
  fmt::print("{:>4}  {:<12} {:>11} {:>11} {:>11} {:>11} {:>11}\n", "ID", "TYPE", "RX/s",
             "TO_HOST/s", "TO_WIRE/s", "DROPPED/s", "EMITTED/s");
  for (const auto& i : r["instances"]) {
    fmt::print("{:>4}  {:<12}", i["instance"].get<uint32_t>(), i["type"].get<std::string>());
    for (const char* k : kInstanceRates) fmt::print(" {:>11.1f}", i[k].get<double>());
    fmt::print("\n");
  }
}

// Refreshes every `every` seconds, `count` times (0: until Ctrl-C).
int watch(gaon::control::Client& client, double every, uint64_t count, std::optional<uint32_t> only,
          bool json) {
  auto snapshot = [&]() { return client.call("stats"); };
  if (only) {  // the instance must exist and be the caller's: say so once, at the start
    if (auto r = client.call("stats", {{"instance", *only}}); !r) return fail(r.error());
  }
  catch_stop_signals();
  const bool tty = !json && isatty(STDOUT_FILENO);
  auto prev = snapshot();
  if (!prev) return fail(prev.error());
  auto prev_at = std::chrono::steady_clock::now();
  auto next = prev_at;
  const auto step = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(every));
  for (uint64_t n = 0; count == 0 || n < count; ++n) {
    next += step;
    sleep_until(next);
    if (g_stop) break;
    auto cur = snapshot();
    if (!cur) {
      if (g_stop) break;  // interrupted while asking
      return fail(cur.error());
    }
    const auto at = std::chrono::steady_clock::now();
    const double dt = std::chrono::duration<double>(at - prev_at).count();
    const nlohmann::json r = rates(*prev, *cur, dt > 0 ? dt : every, only);
    if (json) {
      fmt::print("{}\n", r.dump());
    } else {
      if (tty)
        fmt::print("\033[H\033[2J");
      else if (n > 0)
        fmt::print("\n");
      print_rates(r, every);
    }
    std::fflush(stdout);
    prev = std::move(cur);
    prev_at = at;
  }
  return 0;
}

// capture: gaond writes the pcapng into one end of a socket pair, passed with the request;
// a thread copies the other end into `to` until gaond closes its end, and the reply (frames
// taken and lost) comes when the capture ends.
int capture(gaon::control::Client& client, nlohmann::json args, const std::string& to, bool json) {
  // (a file this created is removed again if nothing was captured; one that was there stays)
  const bool created = to != "-" && access(to.c_str(), F_OK) != 0;
  const int out = to == "-" ? 1 : open(to.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out < 0) return fail(fmt::format("capture: {}: {}", to, std::strerror(errno)));
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    return fail(fmt::format("capture: socketpair: {}", std::strerror(errno)));
  std::string werr;
  uint64_t bytes = 0;
  std::thread copier([&] {
    char buf[65536];
    for (;;) {
      const ssize_t n = read(sv[0], buf, sizeof buf);
      if (n <= 0) break;
      for (ssize_t off = 0; off < n && werr.empty();) {
        const ssize_t w = write(out, buf + off, size_t(n - off));
        if (w < 0) {
          werr = std::strerror(errno);
          break;
        }
        off += w;
      }
      bytes += uint64_t(n);
    }
  });
  auto r = client.call("capture", std::move(args), sv[1]);
  close(sv[1]);
  copier.join();
  close(sv[0]);
  if (out != 1 && close(out) != 0 && werr.empty()) werr = std::strerror(errno);
  if (!r) {
    if (created && bytes == 0) unlink(to.c_str());
    return fail(r.error());
  }
  if (!werr.empty()) return fail(fmt::format("capture: writing {}: {}", to, werr));
  if (json)
    fmt::print("{}\n", r->dump(2));
  else
    fmt::print(stderr, "gaonctl: {} frames captured, {} lost (ring full); ended: {}\n",
               (*r)["frames"].get<uint64_t>(), (*r)["lost"].get<uint64_t>(),
               (*r)["ended"].get<std::string>());
  return 0;
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
  app.fallthrough();  // --json and --control after the command too

  auto* types = app.add_subcommand("types", "ikernel types gaond knows, with parameters and ops");
  auto* list =
      app.add_subcommand("list", "instances (yours; root: all) with owner, flows, counters");
  uint32_t id = 0;
  auto* stats = app.add_subcommand("stats", "datapath stats, or one instance's");
  stats->add_option("instance", id, "instance id");
  std::string watch_s, count_s;
  stats->add_option("--watch", watch_s, "refresh every N seconds, showing rates (like top)");
  stats->add_option("--count", count_s, "with --watch: stop after K refreshes");
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
  auto* cap = app.add_subcommand(
      "capture",
      "record an instance's frames as pcapng, with each frame's verdict (owner or root)");
  cap->add_option("instance", id, "instance id")->required();
  std::string at = "in,out", cap_to;
  uint64_t cap_count = 1000, cap_seconds = 60, snaplen = 2048;
  cap->add_option("--at", at, "in (as frames reach it), out (as they leave), or in,out")
      ->capture_default_str();
  cap->add_option("--count", cap_count, "stop after this many frames (1..10000000)")
      ->capture_default_str();
  cap->add_option("--seconds", cap_seconds, "stop after this many seconds (1..3600)")
      ->capture_default_str();
  cap->add_option("--snaplen", snaplen, "bytes kept of each frame (1..2048)")
      ->capture_default_str();
  cap->add_option("-w,--write", cap_to, "the pcapng file to write ('-': standard output)")
      ->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {  // one line, exit status 2
    fmt::print(stderr, "gaonctl: error: {} (see gaonctl --help)\n", e.what());
    return 2;
  }

  std::optional<double> every;
  uint64_t count = 0;
  if (stats->count("--watch")) {
    every = parse_seconds(watch_s);
    if (!every) {
      fmt::print(stderr,
                 "gaonctl: error: stats --watch: expected a number of seconds above 0 (at most "
                 "86400), got '{}'\n",
                 watch_s);
      return 2;
    }
  }
  if (stats->count("--count")) {
    if (!every) {
      fmt::print(stderr, "gaonctl: error: stats --count needs --watch N\n");
      return 2;
    }
    const auto k = parse_count(count_s);
    if (!k) {
      fmt::print(stderr,
                 "gaonctl: error: stats --count: expected a whole number above 0, got '{}'\n",
                 count_s);
      return 2;
    }
    count = *k;
  }

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
  if (every)
    return watch(*client, *every, count,
                 stats->count("instance") ? std::optional<uint32_t>(id) : std::nullopt, json);

  if (cap->parsed())
    return capture(*client,
                   {{"instance", id},
                    {"at", at},
                    {"count", cap_count},
                    {"seconds", cap_seconds},
                    {"snaplen", snaplen}},
                   cap_to, json);

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

// gaon-run: runs an unmodified program with an ikernel attached to the socket it binds.
//
//   gaon-run --ikernel kvcache --param capacity=48M [--match udp:11211] [--tcp] -- memcached -U
//   11211
//   gaon-run --ikernel kvcache --local --tcp -- memcached -U 11211    (gaond --local: one NIC)
//
// It loads libgaon-preload.so into the program (LD_PRELOAD); see preload.cc. If gaond cannot
// be reached the program still runs, with a warning.
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <string>
#include <vector>

#include <fmt/core.h>
#include <CLI/CLI.hpp>

#include "gaon/control.h"
#include "gaon/params.h"

namespace {

std::string self_dir() {
  char buf[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  std::string p(buf, size_t(n));
  return p.substr(0, p.rfind('/'));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"gaon-run: run a program with a gaon ikernel attached to its socket"};
  app.set_version_flag("--version", "gaon-run " GAON_VERSION);
  std::string type, match, control, quota = "64M";
  std::vector<std::string> params, command;
  app.add_option("-k,--ikernel", type, "ikernel type (gaonctl types)")->required();
  app.add_option("-p,--param", params, "ikernel parameter key=value (repeatable)");
  app.add_option("--quota", quota, "state bytes for the instance")->capture_default_str();
  app.add_option("--match", match, "the socket to attach: udp:PORT (default: the first UDP bind)");
  bool tcp = false;
  app.add_flag("--tcp", tcp,
               "also attach the program's TCP socket on the same port (kvcache: its writes "
               "over TCP invalidate; a bump in the wire)");
  bool local = false;
  app.add_flag("--local", local,
               "a server with one NIC: check that gaond runs there (gaond --local) before "
               "starting the program; the ikernel's fast path then runs on this host's own "
               "interfaces and sockets (docs/one-nic.md)");
  app.add_option("--control", control, "gaond's control socket (default /run/gaon/gaond.sock)");
  app.footer("Everything after -- is the program to run and its arguments.");
  // The program's own options must not be read as ours: split at the first "--".
  int split = 1;
  while (split < argc && std::string(argv[split]) != "--") ++split;
  for (int i = split + 1; i < argc; ++i) command.push_back(argv[i]);
  CLI11_PARSE(app, split, argv);
  if (command.empty()) {
    fmt::print(stderr,
               "gaon-run: error: no program given (gaon-run [OPTIONS] -- PROGRAM ARGS...)\n");
    return 2;
  }

  auto q = gaon::parse_param_value(gaon::ParamType::size, quota);
  if (!q) {
    fmt::print(stderr, "gaon-run: error: --quota {}\n", q.error());
    return 2;
  }
  if (!match.empty()) {
    const bool ok = match.rfind("udp:", 0) == 0 && match.size() > 4 &&
                    match.find_first_not_of("0123456789", 4) == std::string::npos &&
                    std::stoul(match.substr(4).substr(0, 6)) > 0 &&
                    std::stoul(match.substr(4).substr(0, 6)) < 65536;
    if (!ok) {
      fmt::print(stderr, "gaon-run: error: --match '{}': expected udp:PORT\n", match);
      return 2;
    }
  }
  if (local) {  // the one-NIC form needs gaond there: say so now, not as a warning later
    const std::string path = control.empty() ? gaon::control::kDefaultPath : control;
    auto c = gaon::control::Client::connect(path);
    auto st = c ? c->call("stats") : gaon::Result<nlohmann::json>(gaon::Error{c.error()});
    if (!st) {
      fmt::print(stderr, "gaon-run: error: --local: gaond at {}: {}\n", path, st.error());
      return 2;
    }
    if (!st->contains("local")) {
      fmt::print(stderr,
                 "gaon-run: error: --local: gaond at {} is not running on this host's "
                 "interfaces (start it with gaond --local)\n",
                 path);
      return 2;
    }
  }
  std::string joined;
  for (const auto& p : params) {
    if (p.find('\n') != std::string::npos || p.find('=') == std::string::npos) {
      fmt::print(stderr, "gaon-run: error: --param '{}': expected key=value\n", p);
      return 2;
    }
    joined += p + "\n";
  }
  std::string preload = std::getenv("GAON_PRELOAD") ? std::getenv("GAON_PRELOAD") : "";
  if (preload.empty()) {
    for (const std::string& cand : {self_dir() + "/libgaon-preload.so",
                                    self_dir() + "/../" GAON_LIBDIR "/gaon/libgaon-preload.so"})
      if (access(cand.c_str(), R_OK) == 0) {
        preload = cand;
        break;
      }
  }
  if (preload.empty()) {
    fmt::print(stderr, "gaon-run: warning: libgaon-preload.so not found; running without gaon\n");
  } else {
    const char* old = std::getenv("LD_PRELOAD");
    setenv("LD_PRELOAD", (preload + (old && *old ? std::string(":") + old : "")).c_str(), 1);
    setenv("GAON_RUN_IKERNEL", type.c_str(), 1);
    setenv("GAON_RUN_PARAMS", joined.c_str(), 1);
    setenv("GAON_RUN_QUOTA", std::to_string(std::get<uint64_t>(*q)).c_str(), 1);
    setenv("GAON_RUN_MATCH", match.c_str(), 1);
    setenv("GAON_RUN_TCP", tcp ? "1" : "0", 1);
    if (!control.empty()) setenv("GAON_RUN_CONTROL", control.c_str(), 1);
  }
  std::vector<char*> args;
  for (auto& a : command) args.push_back(a.data());
  args.push_back(nullptr);
  execvp(args[0], args.data());
  fmt::print(stderr, "gaon-run: error: cannot run {}: {}\n", command[0], std::strerror(errno));
  return 127;
}

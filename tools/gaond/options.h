// gaond's settings: one struct, filled from the command line or a config file (config.h),
// whose options are declared once (add_options) for both.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace gaond {

// An ikernel instance gaond creates at start: the command line's --ikernel (name ""), or
// a config file's [[instance]] table.
struct InstanceSpec {
  std::string name;  // "" for the command line's
  std::string type;
  std::vector<std::string> params;  // key=value
  std::vector<std::string> flows;   // udp:IP:PORT
  std::string quota = "256M";
  uint32_t weight = 1;
  uint64_t rate_bps = 0;
  int line = 0;  // where a config file gives it (0: command line)
  bool operator==(const InstanceSpec& o) const {
    return type == o.type && params == o.params && flows == o.flows && quota == o.quota &&
           weight == o.weight && rate_bps == o.rate_bps;
  }
};

struct Options {
  bool list = false;
  bool local = false;
  std::vector<std::string> ifaces;
  std::vector<std::string> wire, host;
  InstanceSpec ikernel;  // --ikernel, --param, --flow, --state-quota, --weight, --rate-bps
  std::string xdp_mode = "auto";
  uint32_t lease_ms = 50;
  uint32_t xdp_memory_mb;
  uint64_t wire_rate_bps = 0;
  double nat_idle_s = 60;
  int cpu = -1;
  bool busy_poll = false;
  bool json_stats = false;
  std::string control;
  uint32_t max_instances = 16;
  std::string max_state = "1G";
  std::string state_dir;
  bool state_dir_given = false;  // (filled after parsing)
  std::string metrics;           // IP:PORT, "" = off
  std::string log_level = "info";
  Options();
};

// Declares every setting on `app`, bound to `o` (long names are the config file's keys).
void add_options(CLI::App& app, Options& o);

}  // namespace gaond

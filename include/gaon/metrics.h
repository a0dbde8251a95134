// Prometheus metrics for gaond: its stats JSON (what `gaonctl --json stats` and
// `gaond --json-stats` print) turned into metric families, served over HTTP on
// /metrics by prometheus-cpp's Exposer (civetweb). Names, labels and a scrape config:
// docs/metrics.md.
//
//   auto m = gaon::metrics::Server::start("127.0.0.1:9464", [&] { return full_stats(...); });
//   if (!m) return fail(m.error());
//
// The stats function is called on each scrape, from the exposer's thread (one scrape at
// a time): it must be safe to call there (Engine::stats() and Engine::call() are).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "gaon/result.h"

namespace gaon::metrics {

using StatsFn = std::function<nlohmann::json()>;

// The Prometheus text exposition (format 0.0.4) of one stats JSON: pure, for tests and
// for tools that have the JSON already. Values it does not know are exported generically.
std::string render(const nlohmann::json& stats);

class Server {
 public:
  // Listens on `listen`, "IP:PORT" ("[IPv6]:PORT"; port 0: any free one, see port()),
  // and serves /metrics from `stats`. An error names the address and why.
  static Result<std::unique_ptr<Server>> start(const std::string& listen, StatsFn stats);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  uint16_t port() const;     // the port it listens on
  uint64_t scrapes() const;  // scrapes served so far

 private:
  struct Impl;
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace gaon::metrics

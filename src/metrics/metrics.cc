// gaond's stats JSON as Prometheus metric families (see docs/metrics.md), and the HTTP
// endpoint that serves them (prometheus-cpp's Exposer).
#include "gaon/metrics.h"

#include "gaon/instance.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include <atomic>
#include <map>
#include <mutex>
#include <sstream>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/exposer.h>
#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>

#include "gaon/xdp_abi.h"
#include "kvcache/kvcache.h"  // GAON_KVCACHE_COUNTERS, GAON_KVCACHE_TCP_COUNTERS

namespace gaon::metrics {
namespace {

using nlohmann::json;
using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using Labels = std::vector<ClientMetric::Label>;

// Families in the order they are first added; each sample carries its labels.
class Builder {
 public:
  void add(const std::string& name, const std::string& help, MetricType type, const Labels& labels,
           double v) {
    auto [it, fresh] = index_.try_emplace(name, fams_.size());
    if (fresh) fams_.push_back({name, help, type, {}});
    MetricFamily& f = fams_[it->second];
    ClientMetric m;
    m.label = labels;
    switch (type) {
      case MetricType::Counter:
        m.counter.value = v;
        break;
      case MetricType::Gauge:
        m.gauge.value = v;
        break;
      default:
        m.untyped.value = v;
        break;
    }
    f.metric.push_back(std::move(m));
  }
  void counter(const std::string& name, const std::string& help, const Labels& l, double v) {
    add(name, help, MetricType::Counter, l, v);
  }
  void gauge(const std::string& name, const std::string& help, const Labels& l, double v) {
    add(name, help, MetricType::Gauge, l, v);
  }
  std::vector<MetricFamily> take() { return std::move(fams_); }

 private:
  std::vector<MetricFamily> fams_;
  std::map<std::string, size_t> index_;
};

bool number(const json& j) { return j.is_number() || j.is_boolean(); }
double num(const json& j) {
  if (j.is_boolean()) return j.get<bool>() ? 1 : 0;
  return j.is_number() ? j.get<double>() : 0;
}
// j[key] when it is a number (or a boolean), else nothing is exported.
template <class F>
void if_num(const json& j, const char* key, F&& f) {
  if (j.is_object() && j.contains(key) && number(j[key])) f(num(j[key]));
}
Labels with(Labels l, std::string name, std::string value) {
  l.push_back({std::move(name), std::move(value)});
  return l;
}
std::string str(const json& j) {
  if (j.is_string()) return j.get<std::string>();
  return j.dump();
}

// Every numeric leaf of `j` (nested objects joined by '.', arrays by index) that is not
// under one of `skip`, as one untyped sample of `name` labelled name="path".
void generic(Builder& b, const std::string& metric, const std::string& help, const Labels& l,
             const json& j, const std::vector<std::string>& skip, const std::string& path = "") {
  if (number(j)) {
    if (!path.empty()) b.add(metric, help, MetricType::Untyped, with(l, "name", path), num(j));
    return;
  }
  if (!j.is_object() && !j.is_array()) return;
  size_t i = 0;
  for (const auto& [k, v] : j.items()) {
    const std::string key = j.is_array() ? std::to_string(i++) : k;
    if (path.empty() && std::find(skip.begin(), skip.end(), key) != skip.end()) continue;
    generic(b, metric, help, l, v, skip, path.empty() ? key : path + "." + key);
  }
}

// A port's own stats (Port::stats: sidecar groups with members, AF_XDP, AF_PACKET): rx,
// tx, what was lost before gaond and what it could not send by reason; the rest generic.
void port_stats(Builder& b, const Labels& l, const json& ps, const std::string& pre) {
  if_num(ps, "rx", [&](double v) {
    b.counter(pre + "rx_frames_total", "frames the port delivered to the engine", l, v);
  });
  if_num(ps, "tx",
         [&](double v) { b.counter(pre + "tx_frames_total", "frames the port sent", l, v); });
  if (ps.contains("rx_dropped") && ps["rx_dropped"].is_object())
    for (const auto& [k, v] : ps["rx_dropped"].items())
      if (number(v))
        b.counter(pre + "rx_dropped_frames_total",
                  "frames lost before gaond saw them (the socket or kernel), by reason",
                  with(l, "reason", k), num(v));
  if (ps.contains("tx_dropped") && ps["tx_dropped"].is_object())
    for (const auto& [k, v] : ps["tx_dropped"].items())
      if (number(v))
        b.counter(pre + "tx_dropped_frames_total",
                  "frames taken from the engine that the port could not send, by reason",
                  with(l, "reason", k), num(v));
  if (ps.contains("rx_by_queue") && ps["rx_by_queue"].is_array()) {
    size_t q = 0;
    for (const auto& v : ps["rx_by_queue"])
      b.counter(pre + "rx_queue_frames_total", "frames taken from each receive queue",
                with(l, "queue", std::to_string(q++)), num(v));
  }
  generic(b, pre + "stat",
          "another numeric value of the port's stats (its path in name; see docs/metrics.md)", l,
          ps, {"rx", "tx", "rx_dropped", "tx_dropped", "rx_by_queue", "members", "name"});
}

void engine(Builder& b, const json& s) {
  for (const char* side : {"wire", "host"}) {
    if (!s.contains(side)) continue;
    const json& p = s[side];
    const Labels l = {{"side", side}};
    if_num(p, "rx", [&](double v) {
      b.counter("gaon_rx_frames_total", "frames the engine received, by side (wire: clients)", l,
                v);
    });
    if_num(p, "tx", [&](double v) {
      b.counter("gaon_tx_frames_total", "frames the engine sent, by side", l, v);
    });
    if (p.contains("port_stats")) {
      const json& ps = p["port_stats"];
      port_stats(b, l, ps, "gaon_port_");
      if (ps.contains("members") && ps["members"].is_array())
        for (const auto& m : ps["members"])
          port_stats(b, with(l, "member", str(m.value("name", json("")))), m, "gaon_port_member_");
    }
  }
  if_num(s, "unmatched", [&](double v) {
    b.counter("gaon_unmatched_frames_total",
              "frames of parsed flows attached to no instance (passed through)", {}, v);
  });
  if (s.contains("not_parsed") && s["not_parsed"].is_object())
    for (const auto& [k, v] : s["not_parsed"].items())
      b.counter("gaon_not_parsed_frames_total", "frames that did not parse, by reason (passed)",
                {{"reason", k}}, num(v));
  if_num(s, "l4_csum_partial", [&](double v) {
    b.counter("gaon_l4_csum_partial_frames_total", "frames with an offloaded (partial) L4 checksum",
              {}, v);
  });
  if_num(s, "oversize", [&](double v) {
    b.counter("gaon_oversize_datagrams_total",
              "datagrams too large for a frame (sidecar), passed whole or dropped", {}, v);
  });
  if_num(s, "gaps", [&](double v) {
    b.counter("gaon_gaps_total",
              "times attached flows went around the engine, or the application restarted", {}, v);
  });
  if (s.contains("conservation")) {
    const json& c = s["conservation"];
    if (c.contains("in"))
      if_num(c["in"], "emitted", [&](double v) {
        b.counter("gaon_emitted_frames_total", "new frames instances emitted", {}, v);
      });
    if (c.contains("dropped") && c["dropped"].is_object())
      for (const auto& [k, v] : c["dropped"].items())
        b.counter("gaon_dropped_frames_total", "frames the engine dropped, by reason",
                  {{"reason", k}}, num(v));
    if_num(c, "queued", [&](double v) {
      b.gauge("gaon_queued_frames", "frames inside the engine (queues, pending bursts)", {}, v);
    });
    const char* books_help =
        "1 when every frame is accounted for (in = out + dropped + queued), by books";
    if_num(c, "balanced", [&](double v) {
      b.gauge("gaon_books_balanced", books_help, {{"books", "engine"}}, v);
    });
    for (const char* p : {"wire_port", "host_port"})
      if (c.contains(p))
        if_num(c[p], "balanced", [&](double v) {
          b.gauge("gaon_books_balanced", books_help, {{"books", p}}, v);
        });
  }
  if (s.contains("pool")) {
    if_num(s["pool"], "frames",
           [&](double v) { b.gauge("gaon_pool_frames", "frames in the buffer pool", {}, v); });
    if_num(s["pool"], "free", [&](double v) {
      b.gauge("gaon_pool_free_frames", "frames of the pool not in use", {}, v);
    });
  }
  if_num(s, "flows",
         [&](double v) { b.gauge("gaon_flows", "flows attached to instances", {}, v); });
  if (s.contains("host_class")) {
    const json& h = s["host_class"];
    const Labels l = {{"class", "host"}};
    if_num(h, "enqueued", [&](double v) {
      b.counter("gaon_arbiter_enqueued_frames_total",
                "frames queued for the wire by the arbiter, by class", l, v);
    });
    if_num(h, "sent", [&](double v) {
      b.counter("gaon_arbiter_sent_frames_total", "frames the arbiter sent to the wire", l, v);
    });
    if_num(h, "sent_bytes", [&](double v) {
      b.counter("gaon_arbiter_sent_bytes_total", "bytes the arbiter sent to the wire", l, v);
    });
    if_num(h, "dropped_full", [&](double v) {
      b.counter("gaon_arbiter_dropped_frames_total",
                "frames dropped because the class's queue was full", l, v);
    });
  }
  if_num(s, "idle_waits", [&](double v) {
    b.counter("gaon_idle_waits_total", "times the datapath blocked waiting for traffic", {}, v);
  });
}

// The steering program's section: "bump" (AF_XDP between two interfaces) or "local" (one
// NIC). The counters come from GAON_STEER_STATS, as the program's map does.
void steering(Builder& b, const json& s) {
  for (const char* mode : {"bump", "local"}) {
    if (!s.contains(mode) || !s[mode].is_object()) continue;
    const json& x = s[mode];
    const Labels l = {{"mode", mode}};
    if (x.contains("xdp")) {
#define GAON_METRICS_STEER(name, doc)                                                     \
  if_num(x["xdp"], #name, [&](double v) {                                                 \
    b.counter("gaon_steer_" #name "_frames_total", "steering program (XDP): " doc, l, v); \
  });
      GAON_STEER_STATS(GAON_METRICS_STEER)
#undef GAON_METRICS_STEER
    }
    if_num(x, "lease_lapses", [&](double v) {
      b.counter("gaon_lease_lapses_total",
                "times gaond's lease lapsed (flows forwarded around it until it polled again)", l,
                v);
    });
    if_num(x, "lease_ms", [&](double v) {
      b.gauge("gaon_lease_seconds", "the lease: how long gaond may not poll before it is bypassed",
              l, v / 1e3);
    });
    if_num(x, "steered_flows", [&](double v) {
      b.gauge("gaon_steered_flows", "flows the steering program hands to gaond", l, v);
    });
    if_num(x, "fast_path_memory_free_mb", [&](double v) {
      b.gauge("gaon_fast_path_memory_free_bytes", "memory for fast-path state not in use", l,
              v * GAON_FP_CHUNK);
    });
    if_num(x, "fill_per_queue", [&](double v) {
      b.gauge("gaon_afxdp_fill_frames_per_queue", "frames kept in each AF_XDP fill ring", l, v);
    });
    // What was negotiated (copy or zero-copy AF_XDP, native or generic XDP).
    Labels info = l;
    for (const char* k : {"xdp_mode", "afxdp_mode"})
      if (x.contains(k) && x[k].is_string()) info.push_back({k, x[k].get<std::string>()});
    b.gauge("gaon_xdp_info", "what the kernel gave: XDP mode and AF_XDP mode (value 1)", info, 1);
  }
}

void kvcache(Builder& b, const Labels& l, const json& st, const json* fp) {
  // memcached_exporter's names where it has one (memcached_commands_total, ...).
  double fp_hits = 0;
  if (fp != nullptr) if_num(*fp, "answered", [&](double v) { fp_hits = v; });
  const char* cmd_help =
      "commands by status: GET keys hit or missed (hits include the fast path's, each a "
      "single-key GET), writes and flushes seen";
  if_num(st, "hit_keys", [&](double v) {
    b.counter("gaon_kvcache_commands_total", cmd_help,
              with(with(l, "command", "get"), "status", "hit"), v + fp_hits);
  });
  if_num(st, "miss_keys", [&](double v) {
    b.counter("gaon_kvcache_commands_total", cmd_help,
              with(with(l, "command", "get"), "status", "miss"), v);
  });
  if_num(st, "writes", [&](double v) {
    b.counter("gaon_kvcache_commands_total", cmd_help,
              with(with(l, "command", "write"), "status", "seen"), v);
  });
  if_num(st, "flushes", [&](double v) {
    b.counter("gaon_kvcache_commands_total", cmd_help,
              with(with(l, "command", "flush"), "status", "seen"), v);
  });
  if_num(st, "items", [&](double v) { b.gauge("gaon_kvcache_items", "items in the cache", l, v); });
  if_num(st, "bytes_used", [&](double v) {
    b.gauge("gaon_kvcache_bytes", "bytes of the items in the cache (keys and values)", l, v);
  });
  if (st.contains("geometry")) {
    if_num(st["geometry"], "table_bytes", [&](double v) {
      b.gauge("gaon_kvcache_limit_bytes", "bytes the item table takes (its capacity)", l, v);
    });
    if_num(st["geometry"], "slots", [&](double v) {
      b.gauge("gaon_kvcache_limit_items", "slots of the item table (items it can hold)", l, v);
    });
    if_num(st["geometry"], "max_value", [&](double v) {
      b.gauge("gaon_kvcache_max_value_bytes", "largest value cached", l, v);
    });
  }
  if_num(st, "evictions", [&](double v) {
    b.counter("gaon_kvcache_evictions_total", "items evicted to make room for others", l, v);
  });
  // The rest from the lists the ikernel's counters are written from.
#define GAON_METRICS_KV(name, doc) \
  if_num(st, #name,                \
         [&](double v) { b.counter("gaon_kvcache_" #name "_total", "kvcache: " doc, l, v); });
  GAON_KVCACHE_COUNTERS(GAON_METRICS_KV)
#undef GAON_METRICS_KV
  if (st.contains("tcp")) {
    const json& tcp = st["tcp"];
#define GAON_METRICS_KV(name, doc)                                             \
  if_num(tcp, #name, [&](double v) {                                           \
    b.counter("gaon_kvcache_tcp_" #name "_total", "kvcache, TCP: " doc, l, v); \
  });
    GAON_KVCACHE_TCP_COUNTERS(GAON_METRICS_KV)
#undef GAON_METRICS_KV
  }
  if (st.contains("rejected_by_reason") && st["rejected_by_reason"].is_object())
    for (const auto& [k, v] : st["rejected_by_reason"].items())
      b.counter("gaon_kvcache_rejected_fills_total", "replies not learned, by reason",
                with(l, "reason", k), num(v));
  if (st.contains("passed_by_issue") && st["passed_by_issue"].is_object())
    for (const auto& [k, v] : st["passed_by_issue"].items())
      b.counter("gaon_kvcache_passed_requests_total",
                "requests passed to memcached unexamined, by what was unusual about them",
                with(l, "issue", k), num(v));
  if (st.contains("writers") && st["writers"].is_string())
    b.gauge("gaon_kvcache_writers_info", "who fills and invalidates the table (value 1)",
            with(l, "writers", st["writers"].get<std::string>()), 1);
}

void fast_path(Builder& b, const Labels& l, const json& fp) {
  if_num(fp, "active", [&](double v) {
    b.gauge("gaon_fast_path_active", "1 when the instance's fast path runs in XDP", l, v);
  });
  if_num(fp, "memory_bytes", [&](double v) {
    b.gauge("gaon_fast_path_memory_bytes", "fast-path memory the instance holds", l, v);
  });
#define GAON_METRICS_FP(name, doc) \
  if_num(fp, #name,                \
         [&](double v) { b.counter("gaon_fast_path_" #name "_total", "fast path: " doc, l, v); });
  GAON_FP_STATS(GAON_METRICS_FP)
#undef GAON_METRICS_FP
  if (fp.contains("answered_by_cpu") && fp["answered_by_cpu"].is_array()) {
    size_t cpu = 0;
    for (const auto& v : fp["answered_by_cpu"])
      b.counter("gaon_fast_path_answered_by_cpu_total",
                "requests answered by the fast path, by CPU", with(l, "cpu", std::to_string(cpu++)),
                num(v));
  }
}

void instances(Builder& b, const json& s) {
  if (!s.contains("instances") || !s["instances"].is_array()) return;
  for (const auto& in : s["instances"]) {
    const Labels l = {{"ikernel_instance", str(in.value("id", json(0)))},
                      {"type", str(in.value("type", json("")))},
                      {"owner", str(in.value("owner", json(0)))}};
    // InstanceCounters (include/gaon/instance.h: the list and its names).
    static const struct {
      const char* key;
      const char* name;
      const char* help;
    } kCounters[] = {
#define GAON_X_METRIC(field, metric, doc) {#field, metric, doc},
        GAON_INSTANCE_COUNTERS(GAON_X_METRIC)
#undef GAON_X_METRIC
    };
    if (in.contains("counters")) {
      const json& c = in["counters"];
      for (const auto& k : kCounters)
        if_num(c, k.key, [&](double v) { b.counter(k.name, k.help, l, v); });
      if (c.contains("errors") && c["errors"].is_object())
        for (const auto& [k, v] : c["errors"].items())
          b.counter("gaon_instance_errors_total",
                    "errors the instance's traffic met (its packets dropped), by reason",
                    with(l, "reason", k), num(v));
    }
    if_num(in, "state_bytes", [&](double v) {
      b.gauge("gaon_instance_state_bytes", "bytes of state the instance holds", l, v);
    });
    if_num(in, "state_quota", [&](double v) {
      b.gauge("gaon_instance_state_quota_bytes", "bytes of state the instance may hold", l, v);
    });
    if (in.contains("traffic_class")) {
      const json& tc = in["traffic_class"];
      if_num(tc, "weight", [&](double v) {
        b.gauge("gaon_instance_weight", "the instance's share of the wire (DRR weight)", l, v);
      });
      if_num(tc, "rate_bps", [&](double v) {
        b.gauge("gaon_instance_rate_limit_bytes_per_second",
                "rate limit of its transmissions (0: none)", l, v / 8);
      });
    }
    if (in.contains("wire_queue")) {
      const json& w = in["wire_queue"];
      if_num(w, "enqueued", [&](double v) {
        b.counter("gaon_instance_wire_enqueued_frames_total",
                  "frames the instance queued for the wire", l, v);
      });
      if_num(w, "dropped_full", [&](double v) {
        b.counter("gaon_instance_wire_dropped_frames_total",
                  "frames dropped because the instance's wire queue was full", l, v);
      });
    }
    const json* fp = nullptr;
    if (in.contains("state") && in["state"].is_object() && in["state"].contains("fast_path"))
      fp = &in["state"]["fast_path"];
    else if (in.contains("fast_path"))
      fp = &in["fast_path"];
    if (fp != nullptr && fp->is_object()) fast_path(b, l, *fp);
    if (in.contains("state") && in["state"].is_object()) {
      const json& st = in["state"];
      if (in.value("type", json("")) == "kvcache")
        kvcache(b, l, st, fp);
      else
        generic(b, "gaon_instance_stat",
                "a numeric value of the instance type's stats operation (its path in name)", l, st,
                {"fast_path"});
    }
  }
}

class Collector : public prometheus::Collectable {
 public:
  explicit Collector(StatsFn f) : f_(std::move(f)) {}
  std::vector<MetricFamily> Collect() const override {
    std::lock_guard lk(mu_);
    scrapes_.fetch_add(1, std::memory_order_relaxed);
    json s;
    try {
      s = f_();
    } catch (...) {
      s = nullptr;
    }
    return families(s, !s.is_null());
  }
  static std::vector<MetricFamily> families(const json& s, bool up) {
    Builder b;
    b.gauge("gaon_stats_up", "1 when gaond's stats could be read for this scrape", {}, up);
    if (s.is_object()) {
      engine(b, s);
      steering(b, s);
      instances(b, s);
    }
    return b.take();
  }
  StatsFn f_;
  mutable std::mutex mu_;
  mutable std::atomic<uint64_t> scrapes_{0};
};

// Why a TCP socket cannot be bound to the address (errno's text), or nullopt if it can.
std::optional<std::string> why_not_bindable(bool v6, const unsigned char* ip, uint16_t port) {
  const int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::string(std::strerror(errno));
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));  // as civetweb does
  sockaddr_storage ss{};
  socklen_t len;
  if (v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    std::memcpy(&a->sin6_addr, ip, 16);
    len = sizeof(*a);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    std::memcpy(&a->sin_addr, ip, 4);
    len = sizeof(*a);
  }
  std::optional<std::string> why;
  if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || listen(fd, 1) != 0)
    why = std::strerror(errno);
  close(fd);
  return why;
}

}  // namespace

std::string render(const nlohmann::json& stats) {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, Collector::families(stats, stats.is_object()));
  return out.str();
}

struct Server::Impl {
  std::shared_ptr<Collector> collector;
  std::unique_ptr<prometheus::Exposer> exposer;
};

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::~Server() = default;

uint16_t Server::port() const {
  const auto ports = impl_->exposer->GetListeningPorts();
  return ports.empty() ? 0 : uint16_t(ports.front());
}

uint64_t Server::scrapes() const { return impl_->collector->scrapes_.load(); }

Result<std::unique_ptr<Server>> Server::start(const std::string& listen, StatsFn stats) {
  // Checked here, so a typo gets a clear message rather than civetweb's.
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0)
    return make_error("metrics: '{}' is not IP:PORT (e.g. 127.0.0.1:9464 or [::1]:9464)",
                      printable(listen));
  std::string ip = listen.substr(0, colon);
  const std::string port = listen.substr(colon + 1);
  const bool v6 = ip.size() >= 2 && ip.front() == '[' && ip.back() == ']';
  if (v6) ip = ip.substr(1, ip.size() - 2);
  unsigned char buf[16];
  if (inet_pton(v6 ? AF_INET6 : AF_INET, ip.c_str(), buf) != 1)
    return make_error("metrics: '{}' in '{}' is not an {}", printable(ip), printable(listen),
                      v6 ? "IPv6 address" : "IPv4 address (IPv6: [ADDR]:PORT)");
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != port.npos ||
      std::stoul(port) > 65535)
    return make_error("metrics: '{}' in '{}' is not a port (0-65535)", printable(port),
                      printable(listen));
  if (!stats) return make_error("metrics: no stats function");
  auto impl = std::make_unique<Impl>();
  impl->collector = std::make_shared<Collector>(std::move(stats));
  try {
    // One thread: scrapes are served one at a time.
    impl->exposer = std::make_unique<prometheus::Exposer>(listen, 1);
  } catch (const std::exception& e) {
    // civetweb says only "possible problem binding to port": ask the kernel why.
    return make_error("metrics: cannot listen on {}: {}", printable(listen),
                      why_not_bindable(v6, buf, uint16_t(std::stoul(port))).value_or(e.what()));
  }
  impl->exposer->RegisterCollectable(impl->collector, "/metrics");
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

}  // namespace gaon::metrics

// Instance: one ikernel type + owner + state region (within a byte quota) + counters +
// traffic class. Created off the datapath (configure, allocate, init), then handed to the
// engine, which steers flows to it.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "gaon/counters.h"
#include "gaon/ikernel.h"
#include "gaon/result.h"

namespace gaon {

class Capture;

// Share of the wire for an instance's transmissions (see Arbiter).
struct TrafficClass {
  uint32_t weight = 1;       // deficit-round-robin weight, 1..1000
  uint64_t rate_bps = 0;     // token-bucket rate limit in bits/s; 0 = none
  uint32_t burst_bytes = 0;  // bucket depth; 0 = default (max(64 KiB, 1 ms at rate))
  bool operator==(const TrafficClass&) const = default;
};
Result<void> validate(const TrafficClass& tc);

// Errors an instance's traffic can meet, counted by reason.
enum class InstanceError : uint8_t {
  wire_queue_full,  // its to_wire packets found its arbiter queue full
  host_tx_full,     // the host port refused its to_host packets
  emit_overflow,    // more emitted packets in one burst than the emit buffer holds
  pool_empty,       // Context::alloc found no free frame
  bad_verdict,      // a verdict out of range (treated as drop)
  count_,
};
inline constexpr size_t kInstanceErrors = static_cast<size_t>(InstanceError::count_);
std::string_view to_string(InstanceError e);

// An instance's counters, written once: X(field, metric name, what it counts). The
// struct's fields, the stats JSON (field names) and the Prometheus names come from it.
#define GAON_INSTANCE_COUNTERS(X)                                                           \
  X(rx, "gaon_instance_rx_packets_total", "ingress packets steered to the instance")        \
  X(egress_rx, "gaon_instance_egress_packets_total",                                        \
    "egress packets (its application's) seen by its egress hook")                           \
  X(to_wire, "gaon_instance_to_wire_packets_total",                                         \
    "packets it sent towards the wire (replies and egress)")                                \
  X(to_host, "gaon_instance_to_host_packets_total", "packets it passed to the host")        \
  X(dropped, "gaon_instance_dropped_packets_total", "packets it dropped by verdict")        \
  X(emitted, "gaon_instance_emitted_packets_total", "new packets it emitted from the pool") \
  X(oversize_passed, "gaon_instance_oversize_passed_total",                                 \
    "datagrams too large for a frame (on_oversize) it passed whole")

struct InstanceCounters {
#define GAON_X_FIELD(field, metric, doc) Counter field;
  GAON_INSTANCE_COUNTERS(GAON_X_FIELD)
#undef GAON_X_FIELD
  std::array<Counter, kInstanceErrors> errors;
  void count(InstanceError e, uint64_t n = 1) { errors[static_cast<size_t>(e)].add(n); }
  nlohmann::json to_json() const;
};

struct InstanceConfig {
  std::string type;
  std::vector<std::string> params;  // "key=value" each
  uint32_t owner_uid = 0;
  size_t state_quota = 64u << 20;  // bytes the instance's state may take
  TrafficClass tc;
};

class Instance {
 public:
  // Looks the type up, validates params, configures, checks the state size against the
  // quota, allocates the (zeroed) region and runs init. Any failure is a clear error and
  // leaves nothing behind.
  static Result<std::unique_ptr<Instance>> create(const InstanceConfig& cfg,
                                                  const class Registry& reg);
  ~Instance();
  Instance(const Instance&) = delete;
  Instance& operator=(const Instance&) = delete;

  uint32_t id() const { return id_; }
  const IKernelType& type() const { return *type_; }
  uint32_t owner() const { return owner_; }
  size_t state_quota() const { return quota_; }
  const TrafficClass& traffic_class() const { return tc_; }
  const std::vector<std::string>& params() const { return params_; }
  IKernel& kernel() { return *kernel_; }
  StateRegion& state() { return region_; }
  InstanceCounters& counters() { return counters_; }
  const InstanceCounters& counters() const { return counters_; }

  // Runs a named state operation; unknown ops and wrong argument counts are errors.
  Result<nlohmann::json> call(std::string_view op, std::span<const std::string> args);
  nlohmann::json to_json() const;

 private:
  friend class Engine;
  Instance() = default;
  uint32_t id_ = 0;  // set by the engine
  const IKernelType* type_ = nullptr;
  uint32_t owner_ = 0;
  size_t quota_ = 0;
  TrafficClass tc_;
  std::vector<std::string> params_;
  std::unique_ptr<IKernel> kernel_;
  void* mem_ = nullptr;
  size_t mem_size_ = 0;
  bool initialized_ = false;  // init succeeded: cleanup is owed
  StateRegion region_;
  Capture* capture_ = nullptr;  // set by Engine::set_capture while someone captures
  InstanceCounters counters_;
  FastPathState* fast_path_ = nullptr;  // datapath only; set by the engine from its FlowObserver
};

}  // namespace gaon

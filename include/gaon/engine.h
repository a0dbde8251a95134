// Engine: the run-to-completion datapath.
//
// One poll():
//   wire rx (≤32) → parse → steer (flow table) → instance process() → verdicts
//       to_host → host tx;  to_wire → the instance's arbiter queue;  drop → pool
//   host rx (≤32) → parse → steer egress → instance process_egress() → host's arbiter queue
//   arbiter (DRR + rate limits) → wire tx, then the burst for the host → host tx
// Frames that do not parse as a UDP/TCP flow, and unmatched flows, pass straight through
// untouched (fail-open), counted by reason. Nothing on this path allocates, throws, locks
// or makes a syscall.
//
// Control changes (instances, flows, traffic classes, state operations) go through
// execute(): when run() drives the engine on its own thread they are queued and applied
// between bursts, so traffic of other instances never stops; otherwise (tests that call
// poll() themselves) they run inline on the caller's thread.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "gaon/arbiter.h"
#include "gaon/counters.h"
#include "gaon/flow.h"
#include "gaon/instance.h"
#include "gaon/parse.h"
#include "gaon/pool.h"
#include "gaon/port.h"

namespace gaon {

struct EngineConfig {
  uint32_t pool_frames = 8192;
  uint32_t max_instances = 255;  // instance slots (traffic classes 1..max)
  uint32_t flow_capacity = 65536;
  uint32_t queue_depth = 512;  // per traffic class, packets
  uint32_t quantum = 1518;     // DRR bytes per unit of weight
  uint32_t host_weight = 1;    // the host traffic class's weight
  ParseOptions parse;
};

// Every frame the engine takes in (received from a port, or emitted by an instance) is
// sent on (taken by a port), dropped under one of the reasons below, or still queued:
// stats()["conservation"] adds them up and says whether they balance.
struct EngineCounters {
  Counter wire_rx, host_rx, wire_tx, host_tx;
  Counter unmatched;      // parsed flows with no instance, passed through
  Counter host_tx_drops;  // the host port refused
  Counter wire_drops;     // arbiter queue full (host class)
  Counter removal_drops;  // queued for the wire when their instance was removed
  Counter emitted;        // new frames instances emitted
  Counter verdict_drops;  // dropped by an instance's verdict (or a bad verdict)
  Counter class_drops;    // an instance's arbiter queue was full (also when rate limited)
  std::array<Counter, kParseResults> parse;  // by reason, ingress and egress
  Counter csum_partial;
  Counter oversize;  // datagrams too large for a frame (sidecar), passed whole or dropped
  Counter gaps;      // times attached flows went around the engine, or the application
                     // restarted (Port::gaps)
};

// Told of every flow the engine gains or loses (control thread, after the change): how a
// port that steers traffic outside the engine (an XDP program) keeps its own table in step.
class FlowObserver {
 public:
  virtual ~FlowObserver() = default;
  // A failure undoes the add_flow that caused it (its error is add_flow's). `fp` is what
  // the instance's type runs in XDP (IKernel::fast_path).
  virtual Result<void> flow_added(const FlowKey& key, uint32_t instance,
                                  const FastPathSpec& fp) = 0;
  virtual void flow_removed(const FlowKey& key) = 0;
  // The fast-path memory given to `instance` by flow_added, if any (fast_path.h).
  virtual FastPathState* fast_path(uint32_t /*instance*/) { return nullptr; }
  // The fast path's counters for `instance` (summed over CPUs), or null.
  virtual nlohmann::json fast_path_stats(uint32_t /*instance*/) { return nullptr; }
  // The instance is gone (its flows were removed first): its fast-path memory may be reused.
  virtual void instance_removed(uint32_t /*instance*/) {}
};

class Engine {
 public:
  static Result<std::unique_ptr<Engine>> create(const EngineConfig& cfg);
  ~Engine();

  BufferPool& pool() { return *pool_; }
  const EngineConfig& config() const { return cfg_; }
  // Ports are set before traffic starts; the engine does not own them.
  void set_ports(Port* wire, Port* host) {
    wire_ = wire;
    host_ = host;
  }

  // Set before traffic starts; not owned.
  void set_flow_observer(FlowObserver* o) { observer_ = o; }

  // ---- control (any thread) ----
  // Takes the instance and gives it an id (its slot); fails when no slot is free.
  Result<uint32_t> add_instance(std::unique_ptr<Instance> inst);
  // Removes the instance with its flows and queued packets; hands it back (cleanup not
  // yet run) so the caller can dispose of it off the datapath.
  Result<std::unique_ptr<Instance>> remove_instance(uint32_t id);
  Result<uint32_t> add_flow(const FlowKey& key, uint32_t instance_id);
  Result<void> remove_flow(const FlowKey& key);
  Result<void> set_traffic_class(uint32_t id, const TrafficClass& tc);
  Result<nlohmann::json> call(uint32_t id, std::string_view op, std::span<const std::string> args);
  // Records the frames of instance `id` into `c` (capture.h) from the next burst on, or
  // stops (nullptr). When it returns, the datapath no longer touches the previous one.
  Result<void> set_capture(uint32_t id, Capture* c);
  nlohmann::json stats();  // includes "conservation" (see EngineCounters)
  nlohmann::json instance_stats(uint32_t id);
  std::vector<FlowEntry> flows();

  // Runs `fn` on the datapath between bursts (or inline when no run() loop is active).
  void execute(const std::function<void()>& fn);
  // Called (from the control thread) after a change is queued, so a datapath blocked in
  // its idle hook wakes at once instead of at the hook's timeout. Set before run().
  void set_waker(std::function<void()> waker) { waker_ = std::move(waker); }

  // ---- datapath ----
  // One iteration at time `now_ns`; returns the number of packets received.
  uint32_t poll(uint64_t now_ns);
  // Polls until `stop` is set, applying control changes between bursts. When `idle` is
  // given, it is called once `idle_after` polls in a row found nothing more to do: nothing
  // left to transmit, and nothing received or both ports drained (Port::rx_drained). A
  // port set blocks there (epoll_wait with a short timeout) instead of spinning. On a core
  // shared with the application, idle_after = 1 gives the core back at once; a dedicated
  // core may spin longer for latency.
  void run(const std::atomic<bool>& stop, const std::function<void()>& idle = {},
           uint32_t idle_after = 64);
  static uint64_t now_ns();

  const EngineCounters& counters() const { return counters_; }
  const Arbiter& arbiter() const { return *arbiter_; }
  // Nothing waits to be transmitted (arbiter queues and the wire's pending burst).
  bool tx_idle() const { return arbiter_->empty() && wire_pending_off_ == wire_pending_n_; }
  Instance* instance(uint32_t id);  // datapath thread / inline use only

 private:
  explicit Engine(const EngineConfig& cfg) : cfg_(cfg) {}
  void ingress(std::span<Packet*> burst, uint64_t now);
  void egress(std::span<Packet*> burst, uint64_t now);
  void run_instance(Instance& inst, std::span<Packet*> pkts, Direction dir, uint64_t now);
  void oversize(Packet* p, Direction dir, uint64_t now);
  void gap(uint64_t now);
  nlohmann::json conservation() const;
  void to_host(Packet* p);
  void to_wire(uint32_t cls, Packet* p, Instance* inst);
  void flush_host();
  void transmit(uint64_t now);
  void drain_control();

  EngineConfig cfg_;
  std::function<void()> waker_;
  FlowObserver* observer_ = nullptr;
  std::unique_ptr<BufferPool> pool_;
  std::unique_ptr<FlowTable> flows_;
  std::unique_ptr<Arbiter> arbiter_;
  std::vector<std::unique_ptr<Instance>> slots_;  // index = instance id; 0 unused
  Port* wire_ = nullptr;
  Port* host_ = nullptr;
  EngineCounters counters_;
  uint64_t port_gaps_ = 0;  // the ports' Port::gaps() last seen

  // per-poll scratch (no allocation on the datapath)
  std::array<Packet*, kBurst> host_buf_{};
  uint32_t host_n_ = 0;
  std::array<Packet*, kBurst> wire_pending_{};
  uint32_t wire_pending_n_ = 0, wire_pending_off_ = 0;
  std::array<Packet*, kBurst * 2> emit_buf_{};

  // control mailbox
  std::mutex control_mu_;
  std::vector<std::packaged_task<void()>*> control_q_;
  std::atomic<bool> control_pending_{false};
  bool running_ = false;  // guarded by control_mu_
  std::thread::id datapath_thread_;
};

}  // namespace gaon

#include "gaon/engine.h"

#include "gaon/capture.h"
#include "gaon/clock.h"

#include <future>

namespace gaon {

namespace {
thread_local const Engine* tl_datapath_engine = nullptr;
}

Result<std::unique_ptr<Engine>> Engine::create(const EngineConfig& cfg) {
  if (cfg.max_instances < 1 || cfg.max_instances > 65535)
    return make_error("engine: max_instances must be 1..65535, not {}", cfg.max_instances);
  if (cfg.queue_depth < kBurst || cfg.queue_depth > 65536)
    return make_error("engine: queue_depth must be {}..65536, not {}", kBurst, cfg.queue_depth);
  if (cfg.pool_frames < 4 * kBurst)
    return make_error("engine: pool_frames must be at least {}, not {}", 4 * kBurst,
                      cfg.pool_frames);
  if (cfg.host_weight < 1 || cfg.host_weight > 1000)
    return make_error("engine: host_weight must be 1..1000, not {}", cfg.host_weight);
  std::unique_ptr<Engine> e(new Engine(cfg));
  auto pool = BufferPool::create(cfg.pool_frames);
  if (!pool) return Error{pool.error()};
  e->pool_ = std::move(*pool);
  auto flows = FlowTable::create(cfg.flow_capacity);
  if (!flows) return Error{flows.error()};
  e->flows_ = std::move(*flows);
  e->arbiter_ = std::make_unique<Arbiter>(cfg.max_instances + 1, cfg.queue_depth, cfg.quantum);
  e->arbiter_->configure(0, cfg.host_weight);
  e->slots_.resize(cfg.max_instances + 1);
  return e;
}

Engine::~Engine() {
  // Packets still queued belong to the pool, which goes away with us; nothing to free.
  for (auto& s : slots_) s.reset();
}

uint64_t Engine::now_ns() { return mono_ns(); }

Instance* Engine::instance(uint32_t id) {
  if (id == 0 || id >= slots_.size()) return nullptr;
  return slots_[id].get();
}

// ---------------------------------------------------------------- datapath

uint32_t Engine::poll(uint64_t now) {
  if (wire_ == nullptr || host_ == nullptr) return 0;
  std::array<Packet*, kBurst> burst;
  uint32_t total = 0;
  const uint32_t wire_n = wire_->rx_burst(burst);
  if (wire_->gaps() + host_->gaps() != port_gaps_) gap(now);
  if (uint32_t n = wire_n) {
    counters_.wire_rx.add(n);
    total += n;
    for (uint32_t i = 0; i < n; ++i) {
      burst[i]->dir = Direction::ingress;
      burst[i]->port = kWirePort;
      if (burst[i]->timestamp_ns == 0) burst[i]->timestamp_ns = now;
    }
    ingress({burst.data(), n}, now);
  }
  if (uint32_t n = host_->rx_burst(burst)) {
    counters_.host_rx.add(n);
    total += n;
    for (uint32_t i = 0; i < n; ++i) {
      burst[i]->dir = Direction::egress;
      burst[i]->port = kHostPort;
      if (burst[i]->timestamp_ns == 0) burst[i]->timestamp_ns = now;
    }
    egress({burst.data(), n}, now);
  }
  // The wire goes first: handing frames to the host can wake the application, and when it
  // shares this core the wake-up may preempt the datapath inside that send (sidecar mode:
  // 8 % less server CPU per request at 60 % hits, docs/benchmarks.md).
  transmit(now);
  flush_host();
  return total;
}

// Steers a burst: packets that are not flows of an instance go `pass`; the rest are grouped
// by instance (in arrival order within each group) and handed to it.
// A datagram too large for a frame (Packet::oversize) of an instance's flow goes to `big`.
template <class Pass, class Big>
static uint32_t classify(std::span<Packet*> burst, const ParseOptions& opt, const FlowTable& flows,
                         EngineCounters& c, Packet** matched, Pass&& pass, Big&& big) {
  uint32_t m = 0;
  for (Packet* p : burst) {
    const ParseResult r = parse(*p, opt);
    if (r != ParseResult::ok) {
      c.parse[static_cast<size_t>(r)].add();
      pass(p);
      continue;
    }
    if (p->hdr.l4_csum_partial) c.csum_partial.add();
    const FlowEntry* e = flows.lookup(*p);
    if (e == nullptr) {
      c.unmatched.add();
      p->instance = kNoInstance;
      pass(p);
      continue;
    }
    p->instance = e->instance;
    p->flow_id = e->flow_id;
    if (p->oversize != 0) {
      big(p);
      continue;
    }
    matched[m++] = p;
  }
  return m;
}

template <class Fn>
static void for_each_group(Packet** pkts, uint32_t n, Fn&& fn) {
  while (n > 0) {
    const uint32_t id = pkts[0]->instance;
    // Stable partition: this instance's packets to the front, the rest after.
    Packet* rest[kBurst];
    uint32_t g = 0, r = 0;
    for (uint32_t i = 0; i < n; ++i) {
      if (pkts[i]->instance == id)
        pkts[g++] = pkts[i];
      else
        rest[r++] = pkts[i];
    }
    fn(id, std::span<Packet*>(pkts, g));
    for (uint32_t i = 0; i < r; ++i) pkts[i] = rest[i];
    n = r;
  }
}

void Engine::ingress(std::span<Packet*> burst, uint64_t now) {
  Packet* matched[kBurst];
  const uint32_t m = classify(
      burst, cfg_.parse, *flows_, counters_, matched, [this](Packet* p) { to_host(p); },
      [&](Packet* p) { oversize(p, Direction::ingress, now); });
  for_each_group(matched, m, [&](uint32_t id, std::span<Packet*> g) {
    Instance* inst = slots_[id].get();
    if (inst == nullptr) {  // cannot happen: flows go with their instance
      for (Packet* p : g) to_host(p);
      return;
    }
    for (Packet* p : g) p->verdict = Verdict::to_host;
    run_instance(*inst, g, Direction::ingress, now);
  });
}

void Engine::egress(std::span<Packet*> burst, uint64_t now) {
  Packet* matched[kBurst];
  const uint32_t m = classify(
      burst, cfg_.parse, *flows_, counters_, matched, [this](Packet* p) { to_wire(0, p, nullptr); },
      [&](Packet* p) { oversize(p, Direction::egress, now); });
  for_each_group(matched, m, [&](uint32_t id, std::span<Packet*> g) {
    Instance* inst = slots_[id].get();
    if (inst == nullptr) {
      for (Packet* p : g) to_wire(0, p, nullptr);
      return;
    }
    for (Packet* p : g) p->verdict = Verdict::to_wire;
    run_instance(*inst, g, Direction::egress, now);
  });
}

void Engine::run_instance(Instance& inst, std::span<Packet*> pkts, Direction dir, uint64_t now) {
  InstanceCounters& ic = inst.counters_;
  Context ctx(inst.id_, inst.region_, ic, *pool_, emit_buf_, now);
  ctx.set_fast_path(inst.fast_path_);
  Capture* const cap = inst.capture_;  // (null unless someone captures this instance)
  if (cap != nullptr) [[unlikely]]
    cap->before(pkts, dir, now);
  if (dir == Direction::ingress) {
    ic.rx.add(pkts.size());
    inst.kernel_->process(ctx, pkts);
  } else {
    ic.egress_rx.add(pkts.size());
    inst.kernel_->process_egress(ctx, pkts);
  }
  // The application's own egress packets share the host's class; what the ikernel
  // answers or emits is charged to the instance's class.
  const uint32_t own_cls = dir == Direction::egress ? 0 : inst.id_;
  if (cap != nullptr) [[unlikely]]
    cap->after(pkts);
  auto dispatch = [&](Packet* p, uint32_t cls) {
    if (cap != nullptr && p->verdict != Verdict::drop) [[unlikely]]
      cap->out(*p, now);
    switch (p->verdict) {
      case Verdict::to_host:
        ic.to_host.add();
        to_host(p);
        break;
      case Verdict::to_wire:
        ic.to_wire.add();
        to_wire(cls, p, &inst);
        break;
      case Verdict::drop:
        ic.dropped.add();
        counters_.verdict_drops.add();
        pool_->free(p);
        break;
      default:
        ic.count(InstanceError::bad_verdict);
        counters_.verdict_drops.add();
        pool_->free(p);
        break;
    }
  };
  for (Packet* p : pkts) dispatch(p, own_cls);
  const size_t ne = ctx.emitted();
  ic.emitted.add(ne);
  counters_.emitted.add(ne);
  for (size_t i = 0; i < ne; ++i) {
    emit_buf_[i]->dir = dir;
    dispatch(emit_buf_[i], inst.id_);
  }
  if (cap != nullptr) [[unlikely]]
    cap->publish();
}

Result<void> Engine::set_capture(uint32_t id, Capture* c) {
  bool found = false;
  execute([&] {
    if (Instance* i = instance(id)) {
      i->capture_ = c;
      found = true;
    }
  });
  if (!found && c != nullptr) return make_error("instance {}: no such instance", id);
  return {};
}

void Engine::gap(uint64_t now) {
  port_gaps_ = wire_->gaps() + host_->gaps();
  counters_.gaps.add();
  for (auto& inst : slots_) {
    if (!inst) continue;
    Context ctx(inst->id_, inst->region_, inst->counters_, *pool_, {}, now);
    ctx.set_fast_path(inst->fast_path_);
    inst->kernel_->on_gap(ctx);
  }
}

// The instance may only pass (whole, by the port) or drop a datagram it sees the head of.
void Engine::oversize(Packet* p, Direction dir, uint64_t now) {
  counters_.oversize.add();
  Instance* inst = instance(p->instance);
  const bool in = dir == Direction::ingress;
  if (inst == nullptr) {
    in ? to_host(p) : to_wire(0, p, nullptr);
    return;
  }
  InstanceCounters& ic = inst->counters_;
  (in ? ic.rx : ic.egress_rx).add();
  Context ctx(inst->id_, inst->region_, ic, *pool_, {}, now);
  ctx.set_fast_path(inst->fast_path_);
  p->verdict = in ? Verdict::to_host : Verdict::to_wire;
  if (inst->kernel_->on_oversize(ctx, *p, dir) == Verdict::drop) {
    ic.dropped.add();
    counters_.verdict_drops.add();
    pool_->free(p);
    return;
  }
  ic.oversize_passed.add();
  if (in) {
    ic.to_host.add();
    to_host(p);
  } else {
    ic.to_wire.add();
    to_wire(0, p, inst);
  }
}

void Engine::to_host(Packet* p) {
  host_buf_[host_n_++] = p;
  if (host_n_ == kBurst) flush_host();
}

void Engine::flush_host() {
  if (host_n_ == 0) return;
  const uint32_t sent = host_->tx_burst({host_buf_.data(), host_n_});
  counters_.host_tx.add(sent);
  for (uint32_t i = sent; i < host_n_; ++i) {
    Packet* p = host_buf_[i];
    counters_.host_tx_drops.add();
    if (Instance* inst = instance(p->instance)) inst->counters_.count(InstanceError::host_tx_full);
    pool_->free(p);
  }
  host_n_ = 0;
}

void Engine::to_wire(uint32_t cls, Packet* p, Instance* inst) {
  if (arbiter_->enqueue(cls, p)) return;
  if (inst != nullptr) {
    inst->counters_.count(InstanceError::wire_queue_full);
    counters_.class_drops.add();
  } else {
    counters_.wire_drops.add();
  }
  pool_->free(p);
}

void Engine::transmit(uint64_t now) {
  // Bounded: a poll brings at most 2 bursts in (plus emitted packets); send up to 4 out.
  for (int round = 0; round < 4; ++round) {
    if (wire_pending_off_ == wire_pending_n_) {
      wire_pending_off_ = 0;
      wire_pending_n_ = arbiter_->dequeue(wire_pending_, now);
      if (wire_pending_n_ == 0) return;
    }
    const uint32_t want = wire_pending_n_ - wire_pending_off_;
    const uint32_t sent = wire_->tx_burst({wire_pending_.data() + wire_pending_off_, want});
    counters_.wire_tx.add(sent);
    wire_pending_off_ += sent;
    if (sent < want) return;  // the wire is full: keep the rest for the next poll
  }
}

// ---------------------------------------------------------------- control

void Engine::execute(const std::function<void()>& fn) {
  if (tl_datapath_engine == this) {  // already on the datapath (a control task)
    fn();
    return;
  }
  std::unique_lock lk(control_mu_);
  if (!running_) {
    fn();
    return;
  }
  std::packaged_task<void()> task(fn);
  auto done = task.get_future();
  control_q_.push_back(&task);
  control_pending_.store(true, std::memory_order_release);
  lk.unlock();
  if (waker_) waker_();
  done.get();  // rethrows what fn threw
}

void Engine::drain_control() {
  std::vector<std::packaged_task<void()>*> q;
  {
    std::lock_guard lk(control_mu_);
    q.swap(control_q_);
    control_pending_.store(false, std::memory_order_relaxed);
  }
  for (auto* t : q) (*t)();
}

void Engine::run(const std::atomic<bool>& stop, const std::function<void()>& idle,
                 uint32_t idle_after) {
  {
    std::lock_guard lk(control_mu_);
    running_ = true;
  }
  tl_datapath_engine = this;
  uint32_t empty = 0;
  while (!stop.load(std::memory_order_relaxed)) {
    if (control_pending_.load(std::memory_order_acquire)) drain_control();
    const uint32_t got = poll(now_ns());
    const bool more = !tx_idle() || (got != 0 && !(wire_->rx_drained() && host_->rx_drained()));
    if (more) {
      empty = 0;
    } else if (++empty >= idle_after && idle) {
      idle();
      empty = 0;
    }
  }
  {
    std::lock_guard lk(control_mu_);
    running_ = false;
  }
  drain_control();  // tasks queued before running_ went false
  tl_datapath_engine = nullptr;
}

Result<uint32_t> Engine::add_instance(std::unique_ptr<Instance> inst) {
  if (!inst) return make_error("no instance");
  Result<uint32_t> r = make_error("instance table is full ({} instances)", cfg_.max_instances);
  execute([&] {
    for (uint32_t id = 1; id < slots_.size(); ++id) {
      if (slots_[id]) continue;
      inst->id_ = id;
      const TrafficClass& tc = inst->tc_;
      arbiter_->configure(id, tc.weight, tc.rate_bps, tc.burst_bytes);
      arbiter_->reset_stats(id);
      slots_[id] = std::move(inst);
      r = id;
      return;
    }
  });
  return r;
}

Result<std::unique_ptr<Instance>> Engine::remove_instance(uint32_t id) {
  Result<std::unique_ptr<Instance>> r = make_error("no instance {}", id);
  // The observer first: a fast path must stop serving from the instance's state before
  // the engine stops seeing the flows' writes (in between they would pass unseen).
  std::vector<FlowKey> gone;
  if (observer_ != nullptr) {
    execute([&] {
      for (const FlowEntry& e : flows_->entries())
        if (e.instance == id) gone.push_back(e.key);
    });
    for (const FlowKey& k : gone) observer_->flow_removed(k);
  }
  execute([&] {
    if (instance(id) == nullptr) return;
    flows_->remove_instance(id);
    std::vector<Packet*> queued(arbiter_->queue_depth());
    const uint32_t n = arbiter_->flush(id, queued);
    for (uint32_t i = 0; i < n; ++i) pool_->free(queued[i]);
    counters_.removal_drops.add(n);
    r = std::move(slots_[id]);
  });
  if (observer_ != nullptr && r) observer_->instance_removed(id);
  return r;
}

Result<uint32_t> Engine::add_flow(const FlowKey& key, uint32_t id) {
  Result<uint32_t> r = make_error("no instance {}", id);
  FastPathSpec fp;
  execute([&] {
    if (Instance* inst = instance(id)) {
      r = flows_->add(key, id);
      fp = inst->kernel().fast_path();
    }
  });
  if (r && observer_ != nullptr) {
    if (auto o = observer_->flow_added(key, id, fp); !o) {
      execute([&] { flows_->remove(key); });
      return Error{o.error()};
    }
    if (FastPathState* f = observer_->fast_path(id))
      execute([&] {
        Instance* inst = instance(id);
        if (inst == nullptr || inst->fast_path_ == f) return;
        inst->fast_path_ = f;
        inst->kernel().on_fast_path(*f);
      });
  }
  return r;
}

Result<void> Engine::remove_flow(const FlowKey& key) {
  // The observer first, as in remove_instance.
  bool attached = false;
  execute([&] {
    for (const FlowEntry& e : flows_->entries()) attached = attached || e.key == key;
  });
  if (!attached) return make_error("flow {} is not attached", key.to_string());
  if (observer_ != nullptr) observer_->flow_removed(key);
  execute([&] { flows_->remove(key); });
  return ok();
}

Result<void> Engine::set_traffic_class(uint32_t id, const TrafficClass& tc) {
  if (auto v = validate(tc); !v) return v;
  Result<void> r = make_error("no instance {}", id);
  execute([&] {
    Instance* inst = instance(id);
    if (inst == nullptr) return;
    inst->tc_ = tc;
    arbiter_->configure(id, tc.weight, tc.rate_bps, tc.burst_bytes);
    r = ok();
  });
  return r;
}

Result<nlohmann::json> Engine::call(uint32_t id, std::string_view op,
                                    std::span<const std::string> args) {
  Result<nlohmann::json> r = make_error("no instance {}", id);
  execute([&] {
    if (Instance* inst = instance(id)) r = inst->call(op, args);
  });
  // The instance's counters in XDP, beside those of gaond (one instance, summed over tiers
  // and CPUs by whoever reads both).
  if (r && op == "stats" && observer_ != nullptr && r->is_object())
    if (nlohmann::json fp = observer_->fast_path_stats(id); !fp.is_null()) (*r)["fast_path"] = fp;
  return r;
}

static nlohmann::json class_json(const ArbiterClassStats& s) {
  return {{"enqueued", s.enqueued},
          {"sent", s.sent},
          {"sent_bytes", s.sent_bytes},
          {"dropped_full", s.dropped_full}};
}

nlohmann::json Engine::instance_stats(uint32_t id) {
  nlohmann::json j;
  execute([&] {
    if (Instance* inst = instance(id)) {
      j = inst->to_json();
      j["wire_queue"] = class_json(arbiter_->stats(id));
      nlohmann::json flows = nlohmann::json::array();
      for (const auto& e : flows_->entries())
        if (e.instance == id) flows.push_back(e.key.to_string());
      j["flows"] = flows;
    }
  });
  if (!j.is_null() && observer_ != nullptr)
    if (nlohmann::json fp = observer_->fast_path_stats(id); !fp.is_null()) j["fast_path"] = fp;
  return j;
}

// Datapath thread (or inline), between polls: nothing is half-way.
nlohmann::json Engine::conservation() const {
  const auto& c = counters_;
  const uint64_t in = c.wire_rx.get() + c.host_rx.get() + c.emitted.get();
  const uint64_t out = c.wire_tx.get() + c.host_tx.get();
  const uint64_t dropped = c.host_tx_drops.get() + c.wire_drops.get() + c.verdict_drops.get() +
                           c.class_drops.get() + c.removal_drops.get();
  const uint64_t queued = arbiter_->queued() + (wire_pending_n_ - wire_pending_off_) + host_n_;
  return {
      {"in",
       {{"wire_rx", c.wire_rx.get()}, {"host_rx", c.host_rx.get()}, {"emitted", c.emitted.get()}}},
      {"out", {{"wire_tx", c.wire_tx.get()}, {"host_tx", c.host_tx.get()}}},
      {"dropped",
       {{"host_port_full", c.host_tx_drops.get()},
        {"host_class_queue_full", c.wire_drops.get()},
        {"instance_queue_full", c.class_drops.get()},
        {"verdict", c.verdict_drops.get()},
        {"instance_removed", c.removal_drops.get()}}},
      {"queued", queued},
      {"balanced", in == out + dropped + queued}};
}

nlohmann::json Engine::stats() {
  nlohmann::json j;
  execute([&] {
    const auto& c = counters_;
    nlohmann::json parse = nlohmann::json::object();
    for (size_t i = 1; i < kParseResults; ++i)
      if (uint64_t v = c.parse[i].get()) parse[std::string(to_string(ParseResult(i)))] = v;
    j = {{"wire",
          {{"port", wire_ ? wire_->name() : ""},
           {"rx", c.wire_rx.get()},
           {"tx", c.wire_tx.get()},
           {"drops", c.wire_drops.get() + c.removal_drops.get()}}},
         {"host",
          {{"port", host_ ? host_->name() : ""},
           {"rx", c.host_rx.get()},
           {"tx", c.host_tx.get()},
           {"drops", c.host_tx_drops.get()}}},
         {"unmatched", c.unmatched.get()},
         {"not_parsed", parse},
         {"l4_csum_partial", c.csum_partial.get()},
         {"oversize", c.oversize.get()},
         {"gaps", c.gaps.get()},
         {"conservation", conservation()},
         {"pool", {{"frames", pool_->capacity()}, {"free", pool_->available()}}},
         {"flows", flows_->size()},
         {"host_class", class_json(arbiter_->stats(0))}};
    nlohmann::json insts = nlohmann::json::array();
    for (uint32_t id = 1; id < slots_.size(); ++id)
      if (slots_[id]) insts.push_back(slots_[id]->to_json());
    j["instances"] = insts;
  });
  return j;
}

std::vector<FlowEntry> Engine::flows() {
  std::vector<FlowEntry> out;
  execute([&] { out = flows_->entries(); });
  return out;
}

}  // namespace gaon

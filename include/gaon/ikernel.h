// The ikernel API.
//
// An ikernel type is code registered by name with a one-line description:
//
//   class Echo : public gaon::PerPacketIKernel<Echo> {
//    public:
//     gaon::Verdict on_packet(gaon::Context&, gaon::Packet& p) { ... }
//   };
//   GAON_IKERNEL(Echo, "echo", "answers each UDP datagram with itself, addresses swapped");
//
// Lifecycle of an instance (driven by Instance::create and the engine):
//   configure(params)  validate typed parameters; may fail with a clear error
//   state_bytes()      how much state it needs (checked against the instance's quota)
//   init(region)       lay out its state inside the region it is given (zeroed)
//   process(ctx, burst)         ingress (wire -> host) packets of its flows; set each verdict
//   process_egress(ctx, burst)  its application's packets on their way to the wire
//   on_oversize(ctx, p, dir)    optional: a datagram too large for a frame (pass or drop)
//   on_gap(ctx)                 optional: its flows' frames may have gone around it
//   call(op, args)     named state operations for the owner (run between bursts)
//   cleanup()
//   fast_path()        optional: the part it runs in XDP in a bump (fast_path.h), and
//   on_fast_path(fp)   the memory its program reads, given with its first flow there
// process/process_egress run on the datapath: no allocation, no exceptions, no locks, no
// syscalls, bounded work. One virtual call per burst; PerPacketIKernel turns that into a
// direct (inlinable) call per packet.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "gaon/fast_path.h"
#include "gaon/packet.h"
#include "gaon/params.h"
#include "gaon/result.h"

namespace gaon {

class BufferPool;
struct InstanceCounters;

// The memory an instance's state lives in: zeroed, of a size fixed at creation, within
// the instance's byte quota. carve<T>(n) hands out aligned pieces of it.
class StateRegion {
 public:
  StateRegion() = default;
  StateRegion(std::byte* base, size_t size) : base_(base), size_(size) {}
  std::byte* data() const { return base_; }
  size_t size() const { return size_; }
  size_t used() const { return used_; }

  template <class T>
  T* carve(size_t count = 1, size_t align = alignof(T)) {
    size_t off = (used_ + align - 1) & ~(align - 1);
    if (count > (size_ - std::min(off, size_)) / sizeof(T) || off > size_) return nullptr;
    used_ = off + count * sizeof(T);
    return reinterpret_cast<T*>(base_ + off);
  }

 private:
  std::byte* base_ = nullptr;
  size_t size_ = 0;
  size_t used_ = 0;
};

// What an ikernel may touch while processing a burst: its own state region, its own
// counters, the clock, and the pool (to emit new packets). Built by the engine per call.
class Context {
 public:
  Context(uint32_t instance, StateRegion& state, InstanceCounters& counters, BufferPool& pool,
          std::span<Packet*> emit_buf, uint64_t now_ns)
      : instance_(instance),
        state_(state),
        counters_(counters),
        pool_(pool),
        emit_buf_(emit_buf),
        now_ns_(now_ns) {}

  uint32_t instance() const { return instance_; }
  StateRegion& state() { return state_; }
  InstanceCounters& counters() { return counters_; }
  uint64_t now_ns() const { return now_ns_; }
  // The instance's fast-path memory in a bump, if its type has a fast path and the ports
  // gave it some (fast_path.h); nullptr otherwise (sidecar, mem ports, none left).
  FastPathState* fast_path() const { return fast_path_; }
  void set_fast_path(FastPathState* f) { fast_path_ = f; }

  // A fresh packet from the pool, or nullptr when the pool is empty (counted).
  Packet* alloc();
  // Gives back a packet from alloc() that will not be emitted after all.
  void free(Packet* p);
  // Queues a packet from alloc() for `v` (to_wire or to_host). When the per-burst emit
  // buffer is full the packet is freed, counted, and false is returned.
  bool emit(Packet* p, Verdict v);
  size_t emitted() const { return n_emit_; }

 private:
  uint32_t instance_;
  StateRegion& state_;
  InstanceCounters& counters_;
  BufferPool& pool_;
  std::span<Packet*> emit_buf_;
  size_t n_emit_ = 0;
  uint64_t now_ns_;
  FastPathState* fast_path_ = nullptr;
};

// A named state operation of a type, exposed to the instance's owner.
struct StateOpSpec {
  std::string name;
  std::string args;  // e.g. "KEY", "" for none
  std::string help;
};

class IKernel {
 public:
  virtual ~IKernel() = default;
  virtual Result<void> configure(const Params&) { return ok(); }
  virtual size_t state_bytes() const { return 0; }
  virtual Result<void> init(StateRegion&) { return ok(); }
  // Ingress packets of this instance's flows. Each arrives with verdict to_host.
  virtual void process(Context& ctx, std::span<Packet*> burst) = 0;
  // Egress packets of this instance's flows (its application's replies). Each arrives
  // with verdict to_wire; the hook may observe them, or drop some.
  virtual void process_egress(Context&, std::span<Packet*>) {}
  // A datagram of one of its flows too large for a frame (Packet::oversize; sidecar ports):
  // `p` holds its head only and is never a reply. Return drop to keep it from its
  // destination, anything else to pass it on whole and untouched. The default passes it;
  // an ikernel whose state depends on every request (a cache that must see writes) or
  // that must vouch for what it passes (an authenticator) overrides this.
  virtual Verdict on_oversize(Context&, Packet& p, Direction) { return p.verdict; }
  // Frames of its flows may have reached their destination without passing through it
  // (gaond stalled and the steering program forwarded them in the kernel), or the
  // application restarted (Port::gaps). Called on the datapath before the next frames;
  // state that depends on having seen every request (a cache) must not trust what it knew.
  virtual void on_gap(Context&) {}
  // A named state operation (the op is one of the type's declared ops).
  virtual Result<nlohmann::json> call(std::string_view op, std::span<const std::string> args);
  virtual void cleanup() {}
  // What the instance runs in XDP (fast_path.h); asked when a flow is added.
  virtual FastPathSpec fast_path() const { return {}; }
  // The fast-path memory it was given (with its first flow in a bump; zeroed), before any
  // frame of that flow reaches it: lay out there the state the program reads. Run on the
  // datapath thread, between bursts.
  virtual void on_fast_path(FastPathState&) {}
};

// For ikernels that decide packet by packet: write
//   Verdict on_packet(Context&, Packet&)            (required)
//   Verdict on_egress(Context&, Packet&)            (optional)
//   void prefetch(Context&, std::span<Packet*>)     (optional) called with the whole
//       ingress burst before on_packet: start the loads of the state the burst will touch
//       (__builtin_prefetch), so their cache misses overlap instead of queueing one by one
template <class Derived>
class PerPacketIKernel : public IKernel {
 public:
  void process(Context& ctx, std::span<Packet*> burst) final {
    auto& self = static_cast<Derived&>(*this);
    if constexpr (requires(Derived & d, Context & c, std::span<Packet*> b) { d.prefetch(c, b); })
      if (burst.size() > 1) self.prefetch(ctx, burst);
    for (Packet* p : burst) p->verdict = self.on_packet(ctx, *p);
  }
  void process_egress(Context& ctx, std::span<Packet*> burst) final {
    if constexpr (requires(Derived & d, Context & c, Packet & p) { d.on_egress(c, p); }) {
      auto& self = static_cast<Derived&>(*this);
      for (Packet* p : burst) p->verdict = self.on_egress(ctx, *p);
    }
  }
};

struct IKernelType {
  std::string name;
  std::string description;
  std::vector<ParamSpec> params;
  std::vector<StateOpSpec> ops;
  std::unique_ptr<IKernel> (*make)() = nullptr;
};

// Types known to this process. Built-in types register themselves at start-up.
class Registry {
 public:
  static Registry& global();
  void add(IKernelType type);
  const IKernelType* find(std::string_view name) const;
  std::vector<const IKernelType*> list() const;  // sorted by name

 private:
  std::vector<IKernelType> types_;
};

namespace detail {
template <class T>
std::vector<ParamSpec> params_of() {
  if constexpr (requires { T::param_specs(); }) return T::param_specs();
  return {};
}
template <class T>
std::vector<StateOpSpec> ops_of() {
  if constexpr (requires { T::state_ops(); }) return T::state_ops();
  return {};
}
struct Registrar {
  explicit Registrar(IKernelType t) { Registry::global().add(std::move(t)); }
};
}  // namespace detail

// Registers `Class` as ikernel type `name`. Optional static members of Class:
//   static std::vector<gaon::ParamSpec> param_specs();
//   static std::vector<gaon::StateOpSpec> state_ops();
#define GAON_IKERNEL(Class, name, description)                                                \
  static const ::gaon::detail::Registrar gaon_registrar_##Class {                             \
    ::gaon::IKernelType {                                                                     \
      name, description, ::gaon::detail::params_of<Class>(), ::gaon::detail::ops_of<Class>(), \
          []() -> std::unique_ptr<::gaon::IKernel> { return std::make_unique<Class>(); }      \
    }                                                                                         \
  }

}  // namespace gaon

#include "gaon/instance.h"

#include "mapping.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>

namespace gaon {

std::string_view to_string(InstanceError e) {
  switch (e) {
    case InstanceError::wire_queue_full:
      return "wire_queue_full";
    case InstanceError::host_tx_full:
      return "host_tx_full";
    case InstanceError::emit_overflow:
      return "emit_overflow";
    case InstanceError::pool_empty:
      return "pool_empty";
    case InstanceError::bad_verdict:
      return "bad_verdict";
    case InstanceError::count_:
      break;
  }
  return "unknown";
}

Result<void> validate(const TrafficClass& tc) {
  if (tc.weight < 1 || tc.weight > 1000)
    return make_error("traffic class weight {} out of range [1, 1000]", tc.weight);
  if (tc.rate_bps != 0 && tc.rate_bps < 8000)
    return make_error("rate limit {} bit/s is below the minimum of 8000 bit/s", tc.rate_bps);
  return ok();
}

nlohmann::json InstanceCounters::to_json() const {
  nlohmann::json errs = nlohmann::json::object();
  for (size_t i = 0; i < kInstanceErrors; ++i)
    errs[std::string(to_string(static_cast<InstanceError>(i)))] = errors[i].get();
  nlohmann::json j = nlohmann::json::object();
#define GAON_X_JSON(field, metric, doc) j[#field] = field.get();
  GAON_INSTANCE_COUNTERS(GAON_X_JSON)
#undef GAON_X_JSON
  j["errors"] = std::move(errs);
  return j;
}

Result<std::unique_ptr<Instance>> Instance::create(const InstanceConfig& cfg, const Registry& reg) {
  const IKernelType* type = reg.find(cfg.type);
  if (type == nullptr) {
    std::string known;
    for (auto* t : reg.list()) known += (known.empty() ? "" : ", ") + t->name;
    return make_error("unknown ikernel type '{}' (known: {})", cfg.type, known);
  }
  if (auto r = validate(cfg.tc); !r) return Error{r.error()};
  auto params = Params::parse(type->params, cfg.params);
  if (!params) return make_error("{}: {}", cfg.type, params.error());

  std::unique_ptr<Instance> inst(new Instance());
  inst->type_ = type;
  inst->owner_ = cfg.owner_uid;
  inst->quota_ = cfg.state_quota;
  inst->tc_ = cfg.tc;
  inst->params_ = params->describe();
  inst->kernel_ = type->make();
  if (auto r = inst->kernel_->configure(*params); !r)
    return make_error("{}: {}", cfg.type, r.error());

  const size_t need = inst->kernel_->state_bytes();
  if (need > cfg.state_quota)
    return make_error("{}: needs {} bytes of state but the quota is {} bytes", cfg.type, need,
                      cfg.state_quota);
  if (need > 0) {
    void* mem = detail::map_region(need);
    if (mem == MAP_FAILED)
      return make_error("{}: cannot allocate {} bytes of state: {}", cfg.type, need,
                        std::strerror(errno));
    inst->mem_ = mem;
    inst->mem_size_ = need;
    inst->region_ = StateRegion(static_cast<std::byte*>(mem), need);
  }
  if (auto r = inst->kernel_->init(inst->region_); !r)
    return make_error("{}: {}", cfg.type, r.error());
  inst->initialized_ = true;
  return inst;
}

Instance::~Instance() {
  if (kernel_ && initialized_) kernel_->cleanup();
  kernel_.reset();
  if (mem_ != nullptr) munmap(mem_, mem_size_);
}

Result<nlohmann::json> Instance::call(std::string_view op, std::span<const std::string> args) {
  for (const auto& spec : type_->ops) {
    if (spec.name != op) continue;
    size_t want = 0;
    for (size_t i = 0; i < spec.args.size(); ++i)
      if (spec.args[i] != ' ' && (i == 0 || spec.args[i - 1] == ' ')) ++want;
    if (args.size() != want)
      return make_error("{} {}: expects {} argument(s){}{}, got {}", type_->name, op, want,
                        want ? ": " : "", spec.args, args.size());
    return kernel_->call(op, args);
  }
  std::string known;
  for (const auto& s : type_->ops) known += (known.empty() ? "" : ", ") + s.name;
  return make_error("ikernel type '{}' has no operation '{}' (known: {})", type_->name, op,
                    known.empty() ? "none" : known);
}

nlohmann::json Instance::to_json() const {
  return {{"id", id_},
          {"type", type_->name},
          {"owner", owner_},
          {"params", params_},
          {"state_bytes", region_.size()},
          {"state_quota", quota_},
          {"traffic_class",
           {{"weight", tc_.weight}, {"rate_bps", tc_.rate_bps}, {"burst_bytes", tc_.burst_bytes}}},
          {"counters", counters_.to_json()}};
}

}  // namespace gaon

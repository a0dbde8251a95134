#include "gaon/ikernel.h"

#include <algorithm>

#include "gaon/instance.h"
#include "gaon/pool.h"

namespace gaon {

Packet* Context::alloc() {
  Packet* p = pool_.alloc();
  if (p == nullptr) counters_.count(InstanceError::pool_empty);
  return p;
}

void Context::free(Packet* p) { pool_.free(p); }

bool Context::emit(Packet* p, Verdict v) {
  if (n_emit_ >= emit_buf_.size()) {
    pool_.free(p);
    counters_.count(InstanceError::emit_overflow);
    return false;
  }
  p->verdict = v;
  p->instance = instance_;
  emit_buf_[n_emit_++] = p;
  return true;
}

Result<nlohmann::json> IKernel::call(std::string_view op, std::span<const std::string>) {
  return make_error("operation '{}' is not implemented", op);
}

Registry& Registry::global() {
  static Registry r;
  return r;
}

void Registry::add(IKernelType type) { types_.push_back(std::move(type)); }

const IKernelType* Registry::find(std::string_view name) const {
  for (const auto& t : types_)
    if (t.name == name) return &t;
  return nullptr;
}

std::vector<const IKernelType*> Registry::list() const {
  std::vector<const IKernelType*> out;
  for (const auto& t : types_) out.push_back(&t);
  std::sort(out.begin(), out.end(), [](auto* a, auto* b) { return a->name < b->name; });
  return out;
}

}  // namespace gaon

#include "passthrough.h"

namespace gaon::ikernels {

Result<nlohmann::json> Passthrough::call(std::string_view op, std::span<const std::string>) {
  if (op == "stats") return nlohmann::json{{"ingress", ingress_}, {"egress", egress_}};
  return IKernel::call(op, {});
}

GAON_IKERNEL(Passthrough, "passthrough", "passes every packet on unchanged (the baseline)");

}  // namespace gaon::ikernels

#include "echo.h"

namespace gaon::ikernels {

Result<nlohmann::json> Echo::call(std::string_view op, std::span<const std::string>) {
  if (op == "stats") return nlohmann::json{{"echoed", s_->echoed}, {"passed", s_->passed}};
  return IKernel::call(op, {});
}

GAON_IKERNEL(Echo, "echo", "answers each UDP datagram with itself, addresses swapped");

}  // namespace gaon::ikernels

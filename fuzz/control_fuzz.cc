// Fuzz target: gaond's control protocol framing and request parsing. The input is a byte
// stream as a client would send it, cut into reads at sizes taken from its first byte.
// Invariants: no crash; every frame is either a request or one-line error; oversized frames
// are skipped without losing the stream's framing.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "gaon/control.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace gaon::control;
  if (size == 0) return 0;
  const size_t chunk = 1 + data[0] % 64;
  FrameReader reader(4096);
  size_t frames = 0;
  for (size_t off = 1; off < size; off += chunk) {
    reader.append({reinterpret_cast<const char*>(data) + off, std::min(chunk, size - off)});
    while (auto e = reader.next()) {
      ++frames;
      if (e->kind == FrameReader::Event::too_large) {
        if (e->length <= 4096) std::abort();
        continue;
      }
      if (e->body.size() > 4096) std::abort();
      auto r = parse_request(e->body);
      if (r) {
        if (!r->msg.is_object() || !r->msg["op"].is_string()) std::abort();
        (void)frame(ok_reply(r->id, r->msg));
      } else if (r.error().empty() || r.error().find('\n') != std::string::npos) {
        std::abort();
      }
    }
  }
  return frames > size ? 1 : 0;
}

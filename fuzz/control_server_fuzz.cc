// Fuzz target: gaond's control server end to end, in process. Each input is a sequence of
// request bodies separated by NUL bytes, sent as frames over the real unix socket to a
// server in front of a real engine (only the `echo` and `passthrough` types registered, so
// no input can ask for a large table). Invariants: no crash; every request gets exactly
// one reply, an object with "ok" true, or false and a one-line "error" and a "code".
// Instances an input leaves behind are destroyed after it.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "gaon/control_server.h"
#include "gaon/mem_port.h"

namespace {

struct World {
  gaon::Registry reg;
  std::unique_ptr<gaon::Engine> engine;
  gaon::MemPort wire{"wire"}, host{"host"};
  std::unique_ptr<gaon::control::Server> server;
  std::unique_ptr<gaon::control::Client> client;
  World() {
    for (const char* t : {"echo", "passthrough"}) reg.add(*gaon::Registry::global().find(t));
    engine = std::move(*gaon::Engine::create({.pool_frames = 256}));
    engine->set_ports(&wire, &host);
    gaon::control::Service s;
    s.wire.sin_family = s.host.sin_family = AF_INET;
    s.wire.sin_port = htons(7000);
    s.host.sin_port = htons(7001);
    const std::string path = "/tmp/gaon-control-fuzz-" + std::to_string(getpid()) + ".sock";
    server = std::move(*gaon::control::Server::start(*engine, reg, {.path = path}, {s}));
    client =
        std::make_unique<gaon::control::Client>(std::move(*gaon::control::Client::connect(path)));
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World w;
  const std::string in(reinterpret_cast<const char*>(data), size);
  size_t start = 0, sent = 0;
  for (size_t i = 0; i <= in.size() && sent < 16; ++i) {
    if (i < in.size() && in[i] != '\0') continue;
    const std::string body = in.substr(start, i - start);
    start = i + 1;
    if (body.size() > 4000) continue;
    std::string f(4, '\0');
    f[2] = char(body.size() >> 8);
    f[3] = char(body.size());
    if (!w.client->send_raw(f + body)) std::abort();
    ++sent;
    auto r = w.client->read_reply();
    if (!r || !(*r)["ok"].is_boolean()) {
      fprintf(stderr, "control_server_fuzz: %s\n", r ? r->dump().c_str() : r.error().c_str());
      std::abort();
    }
    if (!(*r)["ok"].get<bool>()) {
      const auto& e = (*r)["error"];
      if (!e.is_string() || e.get<std::string>().find('\n') != std::string::npos ||
          !(*r)["code"].is_string())
        std::abort();
    }
  }
  auto list = w.client->call("list");
  if (!list) std::abort();
  for (const auto& i : *list)
    if (!w.client->call("destroy", {{"instance", i["instance"]}})) std::abort();
  return 0;
}

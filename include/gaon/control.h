// gaond's control protocol: how applications and operators talk to the datapath.
//
// A unix-domain stream socket (gaond --control PATH). Each message is a frame: a 4-byte
// big-endian length, then that many bytes of JSON (at most kMaxMessage). A request is an
// object {"v": 1, "op": "...", "id": N, ...arguments}; the reply echoes "v" and "id" and
// has either "ok": true and "result", or "ok": false and "error" (one line). A request that
// is malformed, too large or of another version gets an error reply; the connection stays
// usable. A socket to attach travels with its request as SCM_RIGHTS ancillary data.
//
// Operations (arguments):
//   types                                      ikernel types, their parameters and ops
//   create   type, params ["k=v"...], quota, weight, rate_bps, persist
//                                              -> {"instance": ID}
//   destroy  instance
//   list                                       the caller's instances (root: all)
//   call     instance, name, args [...]        a named state operation of the instance
//   stats    [instance]                        one instance, or the datapath
//   attach   instance, flow "udp:IP:PORT"      by address (root: the operator), or
//            instance + a socket (SCM_RIGHTS)  the flow of a socket the caller holds
//   detach   instance, flow
// Error replies also carry a "code": invalid, permission, limit or conflict.
// The caller is known by SO_PEERCRED; only the owner (same uid) or root may touch an
// instance. Instances a connection creates are destroyed when it closes unless created
// with "persist": true (gaonctl does; libgaon does not, so a crashed application leaks
// nothing).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>

#include "gaon/result.h"

namespace gaon::control {

inline constexpr uint32_t kVersion = 1;
inline constexpr uint32_t kMaxMessage = 64 * 1024;
inline constexpr const char* kDefaultPath = "/run/gaon/gaond.sock";

// Length prefix + JSON text.
std::string frame(const nlohmann::json& msg);

// Splits a byte stream into frames. A frame longer than the maximum is skipped (its bytes
// are read and dropped) and reported once, so the stream stays in step.
class FrameReader {
 public:
  explicit FrameReader(uint32_t max = kMaxMessage) : max_(max) {}
  void append(std::string_view bytes) { buf_.append(bytes); }
  struct Event {
    enum Kind { frame, too_large } kind;
    std::string body;     // kind == frame
    uint32_t length = 0;  // kind == too_large: the announced length
  };
  // The next complete frame or oversize announcement; nullopt when more bytes are needed.
  std::optional<Event> next();
  size_t buffered() const { return buf_.size(); }

 private:
  uint32_t max_;
  std::string buf_;
  uint64_t skip_ = 0;  // bytes of an oversized frame still to drop
};

// A parsed request: the JSON object, its op and id. Errors are one line, for the reply.
struct Request {
  nlohmann::json msg;
  std::string op;
  nlohmann::json id;  // null when absent
};
Result<Request> parse_request(std::string_view body);

nlohmann::json ok_reply(const nlohmann::json& id, nlohmann::json result);
// `code` classifies the error for programs: "invalid", "permission", "limit", "conflict".
nlohmann::json error_reply(const nlohmann::json& id, std::string_view error,
                           std::string_view code = "invalid");

// A blocking client: what gaonctl, libgaon and the tests use.
class Client {
 public:
  static Result<Client> connect(const std::string& path);
  Client(Client&& o) noexcept
      : fd_(std::exchange(o.fd_, -1)), next_id_(o.next_id_), reader_(std::move(o.reader_)) {}
  Client& operator=(Client&& o) noexcept;
  ~Client();
  // Sends {"v":1,"op":op,...args} (with `fd` as SCM_RIGHTS when >= 0) and waits for the
  // reply: its "result" when ok, its "error" otherwise.
  Result<nlohmann::json> call(std::string_view op, nlohmann::json args = nlohmann::json::object(),
                              int fd = -1);
  // Raw access for tests: send bytes, read one reply frame.
  Result<void> send_raw(std::string_view bytes);
  Result<nlohmann::json> read_reply();
  int fd() const { return fd_; }
  // The "code" of the last error reply ("" after a success or a transport failure).
  const std::string& last_code() const { return last_code_; }

 private:
  explicit Client(int fd) : fd_(fd) {}
  int fd_ = -1;
  uint64_t next_id_ = 1;
  FrameReader reader_;
  std::string last_code_;
};

}  // namespace gaon::control

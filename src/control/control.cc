#include "gaon/control.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

namespace gaon::control {

std::string frame(const nlohmann::json& msg) {
  const std::string body = msg.dump();
  const uint32_t n = uint32_t(body.size());
  std::string out(4, '\0');
  out[0] = char(n >> 24);
  out[1] = char(n >> 16);
  out[2] = char(n >> 8);
  out[3] = char(n);
  return out + body;
}

std::optional<FrameReader::Event> FrameReader::next() {
  if (skip_ > 0) {
    const size_t drop = size_t(std::min<uint64_t>(skip_, buf_.size()));
    buf_.erase(0, drop);
    skip_ -= drop;
    if (skip_ > 0) return std::nullopt;
  }
  if (buf_.size() < 4) return std::nullopt;
  const auto* b = reinterpret_cast<const uint8_t*>(buf_.data());
  const uint32_t n = uint32_t(b[0]) << 24 | uint32_t(b[1]) << 16 | uint32_t(b[2]) << 8 | b[3];
  if (n > max_) {
    buf_.erase(0, 4);
    skip_ = n;
    const size_t drop = size_t(std::min<uint64_t>(skip_, buf_.size()));
    buf_.erase(0, drop);
    skip_ -= drop;
    return Event{Event::too_large, {}, n};
  }
  if (buf_.size() < 4 + size_t{n}) return std::nullopt;
  Event e{Event::frame, buf_.substr(4, n), n};
  buf_.erase(0, 4 + size_t{n});
  return e;
}

Result<Request> parse_request(std::string_view body) {
  Request r;
  r.msg = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (r.msg.is_discarded()) return make_error("malformed request: not JSON");
  if (!r.msg.is_object()) return make_error("malformed request: not a JSON object");
  if (auto it = r.msg.find("id"); it != r.msg.end()) r.id = *it;
  auto v = r.msg.find("v");
  if (v == r.msg.end() || !v->is_number_unsigned())
    return make_error("malformed request: no protocol version (\"v\": {})", kVersion);
  if (v->get<uint64_t>() != kVersion)
    return make_error("unsupported protocol version {} (this gaond speaks {})", v->get<uint64_t>(),
                      kVersion);
  auto op = r.msg.find("op");
  if (op == r.msg.end() || !op->is_string()) return make_error("malformed request: no \"op\"");
  r.op = op->get<std::string>();
  return r;
}

nlohmann::json ok_reply(const nlohmann::json& id, nlohmann::json result) {
  return {{"v", kVersion}, {"id", id}, {"ok", true}, {"result", std::move(result)}};
}

nlohmann::json error_reply(const nlohmann::json& id, std::string_view error,
                           std::string_view code) {
  return {{"v", kVersion},
          {"id", id},
          {"ok", false},
          {"error", std::string(error)},
          {"code", std::string(code)}};
}

// ---------------------------------------------------------------- Client

Result<Client> Client::connect(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof(a.sun_path)) return make_error("{}: path too long", path);
  std::memcpy(a.sun_path, path.data(), path.size());
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return make_error("socket: {}", std::strerror(errno));
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof(a)) != 0) {
    const int e = errno;
    close(fd);
    return make_error("cannot reach gaond at {}: {}", path, std::strerror(e));
  }
  return Client(fd);
}

Client& Client::operator=(Client&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) close(fd_);
    fd_ = std::exchange(o.fd_, -1);
    next_id_ = o.next_id_;
    reader_ = std::move(o.reader_);
  }
  return *this;
}

Client::~Client() {
  if (fd_ >= 0) close(fd_);
}

static Result<void> send_all(int fd, std::string_view bytes, int pass_fd) {
  size_t off = 0;
  while (off < bytes.size()) {
    iovec iov{const_cast<char*>(bytes.data() + off), bytes.size() - off};
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))] = {};
    if (pass_fd >= 0 && off == 0) {  // the descriptor rides with the first byte
      m.msg_control = ctl;
      m.msg_controllen = sizeof(ctl);
      cmsghdr* c = CMSG_FIRSTHDR(&m);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int));
      std::memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
    }
    const ssize_t n = sendmsg(fd, &m, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return make_error("send to gaond: {}", std::strerror(errno));
    }
    off += size_t(n);
  }
  return ok();
}

Result<void> Client::send_raw(std::string_view bytes) { return send_all(fd_, bytes, -1); }

Result<nlohmann::json> Client::read_reply() {
  // A signal (a timer, SIGCHLD, ...) interrupting the wait is no reason to give up: wait
  // out what is left of the 30 s.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (;;) {
    if (auto e = reader_.next()) {
      if (e->kind == FrameReader::Event::too_large)
        return make_error("gaond sent a reply of {} bytes (too large)", e->length);
      auto j = nlohmann::json::parse(e->body, nullptr, false);
      if (j.is_discarded() || !j.is_object()) return make_error("gaond sent a malformed reply");
      return j;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd p{fd_, POLLIN, 0};
    const int ready = poll(&p, 1, int(std::max<int64_t>(left.count(), 0)));
    if (ready < 0 && errno == EINTR) continue;
    if (ready != 1) return make_error("gaond did not answer within 30 s");
    char buf[16384];
    const ssize_t n = recv(fd_, buf, sizeof(buf), 0);
    if (n == 0) return make_error("gaond closed the connection");
    if (n < 0) {
      if (errno == EINTR) continue;
      return make_error("read from gaond: {}", std::strerror(errno));
    }
    reader_.append({buf, size_t(n)});
  }
}

Result<nlohmann::json> Client::call(std::string_view op, nlohmann::json args, int fd) {
  if (!args.is_object()) return make_error("request arguments must be a JSON object");
  const uint64_t id = next_id_++;
  last_code_.clear();
  args["v"] = kVersion;
  args["op"] = std::string(op);
  args["id"] = id;
  if (auto r = send_all(fd_, frame(args), fd); !r) return Error{r.error()};
  auto reply = read_reply();
  if (!reply) return reply;
  if (reply->value("id", nlohmann::json()) != nlohmann::json(id))
    return make_error("gaond answered another request (id {})",
                      reply->value("id", nlohmann::json()).dump());
  if (!reply->value("ok", false)) {
    last_code_ = reply->value("code", "invalid");
    return make_error("{}", reply->value("error", "unknown error"));
  }
  return reply->value("result", nlohmann::json());
}

}  // namespace gaon::control

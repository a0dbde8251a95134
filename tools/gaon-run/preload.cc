// libgaon-preload.so: loaded into an unmodified program by gaon-run (LD_PRELOAD). It wraps
// bind(): when the program binds the UDP socket gaon-run was asked to match (GAON_RUN_MATCH
// "udp:PORT", or else its first UDP bind, IPv4 or IPv6), it creates the instance gaon-run
// described (GAON_RUN_IKERNEL, GAON_RUN_PARAMS one "k=v" per line, GAON_RUN_QUOTA) through
// libgaon and attaches it to that socket. With GAON_RUN_TCP=1 (gaon-run --tcp) the program's TCP
// sockets bound to the same port are attached to the instance too, whether they are bound
// before the UDP socket (memcached binds TCP first) or after. Anything that fails is a
// warning on stderr and the program runs on as if gaon were not there (fail-open). The
// control connection stays open for the program's life: the instance goes when the
// program does. A watcher thread keeps it so: when gaond is not there yet, or goes away
// (restarted, upgraded), it makes the instance again once gaond is back and attaches the
// same sockets (checked to still be what they were).
#include <dlfcn.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gaon/libgaon.h"

namespace {

using bind_fn = int (*)(int, const sockaddr*, socklen_t);

std::mutex mu;
bool done = false;  // attached (or given up): later UDP binds are left alone
gaon_conn* conn = nullptr;
gaon_ik* ik = nullptr;
unsigned udp_port = 0;            // the attached UDP socket's port
int udp_fd = -1;                  // and the socket
int tcp_seen[8], n_tcp_seen = 0;  // TCP sockets bound before the UDP one
int tcp_fds[8], n_tcp_fds = 0;    // TCP sockets attached

const char* env(const char* k) {
  const char* v = std::getenv(k);
  return v ? v : "";
}

// The socket's type and port (0: not a bound IPv4 or IPv6 socket).
unsigned bound_port(int fd, int* type) {
  socklen_t len = sizeof(*type);
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, type, &len) != 0) return 0;
  sockaddr_storage ss{};
  len = sizeof(ss);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return 0;
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_port);
  return 0;
}

bool matches(int fd) {
  int type = 0;
  const unsigned port = bound_port(fd, &type);
  if (port == 0 || type != SOCK_DGRAM) return false;
  const std::string m = env("GAON_RUN_MATCH");
  if (m.empty()) return true;  // the first UDP bind
  return m == "udp:" + std::to_string(port);
}

void attach_tcp(int fd, bool remember = true) {
  if (remember && n_tcp_fds < 8) tcp_fds[n_tcp_fds++] = fd;
  if (gaon_ik_attach(ik, fd) != GAON_OK)
    std::fprintf(stderr, "gaon-run: warning: TCP socket: %s\n", gaon_last_error(conn));
  else
    std::fprintf(stderr, "gaon-run: %s instance %u attached to the program's TCP socket too\n",
                 env("GAON_RUN_IKERNEL"), gaon_ik_id(ik));
}

// Connects, creates the instance and attaches `fd`; false (with a warning) when any of it
// fails, leaving nothing behind.
bool make_instance(int fd, const char* again) {
  const char* control = env("GAON_RUN_CONTROL");
  if (gaon_connect(*control ? control : nullptr, &conn) != GAON_OK) {
    static std::string last;  // each reason is reported once, not on every retry
    if (last != gaon_last_error(nullptr))
      std::fprintf(stderr, "gaon-run: warning: %s; running without gaon for now\n",
                   gaon_last_error(nullptr));
    last = gaon_last_error(nullptr);
    conn = nullptr;
    return false;
  }
  std::vector<std::string> params;
  const std::string all = env("GAON_RUN_PARAMS");
  for (size_t start = 0; start < all.size();) {
    size_t end = all.find('\n', start);
    if (end == std::string::npos) end = all.size();
    if (end > start) params.push_back(all.substr(start, end - start));
    start = end + 1;
  }
  std::vector<const char*> p;
  for (const auto& s : params) p.push_back(s.c_str());
  gaon_ik_opts opts{};
  opts.quota_bytes = std::strtoull(env("GAON_RUN_QUOTA"), nullptr, 10);
  if (gaon_ik_create(conn, env("GAON_RUN_IKERNEL"), p.data(), p.size(), &opts, &ik) != GAON_OK ||
      gaon_ik_attach(ik, fd) != GAON_OK) {
    std::fprintf(stderr, "gaon-run: warning: %s; running without gaon\n", gaon_last_error(conn));
    gaon_disconnect(conn);  // takes a half-made instance with it
    conn = nullptr;
    ik = nullptr;  // the handle is lost with the connection (a few bytes, once)
    return false;
  }
  std::fprintf(stderr, "gaon-run: %s instance %u attached %sto the program's socket\n",
               env("GAON_RUN_IKERNEL"), gaon_ik_id(ik), again);
  return true;
}

// Attaches the program's TCP sockets on the instance's port (after a new instance).
void attach_tcp_all() {
  int type = 0;
  for (int i = 0; i < n_tcp_fds; ++i)
    if (bound_port(tcp_fds[i], &type) == udp_port && type == SOCK_STREAM)
      attach_tcp(tcp_fds[i], false);
}

// Keeps the instance there: when gaond is not (not yet started, or gone: restarted,
// upgraded, crashed) it tries again, every 200 ms at first and every 2 s at most, and
// makes the instance again on the same sockets when gaond is back.
void watch() {
  bool ever;
  {
    std::lock_guard lk(mu);
    ever = conn != nullptr;
  }
  for (;;) {
    int fd;
    {
      std::lock_guard lk(mu);
      fd = gaon_fd(conn);  // -1 without a connection
    }
    if (fd >= 0) {
      pollfd p{fd, POLLIN, 0};
      while (poll(&p, 1, -1) < 0 && errno == EINTR) {
      }
      std::lock_guard lk(mu);
      // Readable because a call on another thread got its reply (consumed by now)? Then
      // gaond is still there: only end-of-file or an error means it went away.
      char b;
      const ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))) continue;
      gaon_disconnect(conn);
      conn = nullptr;
      ik = nullptr;
      std::fprintf(stderr, "gaon-run: warning: gaond went away; attaching again when it is back\n");
    }
    for (int wait_ms = 200;; wait_ms = std::min(2 * wait_ms, 2000)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms));
      std::lock_guard lk(mu);
      int type = 0;
      if (bound_port(udp_fd, &type) != udp_port || type != SOCK_DGRAM) {
        std::fprintf(stderr, "gaon-run: the program closed its socket; not attaching again\n");
        return;
      }
      if (!make_instance(udp_fd, ever ? "again " : "")) continue;
      ever = true;
      attach_tcp_all();
      break;
    }
  }
}

void attach(int fd) {
  int type = 0;
  udp_fd = fd;
  udp_port = bound_port(fd, &type);
  for (int i = 0; i < n_tcp_seen; ++i)  // TCP sockets bound before, on the same port
    if (bound_port(tcp_seen[i], &type) == udp_port && type == SOCK_STREAM && n_tcp_fds < 8)
      tcp_fds[n_tcp_fds++] = tcp_seen[i];
  n_tcp_seen = 0;
  if (make_instance(fd, "")) attach_tcp_all();
  std::thread(watch).detach();
}

}  // namespace

extern "C" __attribute__((visibility("default"))) int bind(int fd, const sockaddr* addr,
                                                           socklen_t len) {
  static const auto real = reinterpret_cast<bind_fn>(dlsym(RTLD_NEXT, "bind"));
  const int r = real(fd, addr, len);
  if (r != 0 || *env("GAON_RUN_IKERNEL") == '\0') return r;
  const int saved = errno;
  std::lock_guard lk(mu);
  if (!done && matches(fd)) {
    done = true;
    attach(fd);
  } else if (*env("GAON_RUN_TCP") == '1') {
    int type = 0;
    const unsigned port = bound_port(fd, &type);
    if (port != 0 && type == SOCK_STREAM) {
      if (!done && n_tcp_seen < 8)
        tcp_seen[n_tcp_seen++] = fd;  // attached with the instance, on the same port
      else if (done && port == udp_port && ik != nullptr)
        attach_tcp(fd);
      else if (done && port == udp_port && n_tcp_fds < 8)
        tcp_fds[n_tcp_fds++] = fd;  // for when gaond is there
    }
  }
  errno = saved;
  return r;
}

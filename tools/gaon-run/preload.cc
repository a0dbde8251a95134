// libgaon-preload.so: loaded into an unmodified program by gaon-run (LD_PRELOAD). It wraps
// bind(): when the program binds the UDP socket gaon-run was asked to match (GAON_RUN_MATCH
// "udp:PORT", or else its first IPv4 UDP bind), it creates the instance gaon-run described
// (GAON_RUN_IKERNEL, GAON_RUN_PARAMS one "k=v" per line, GAON_RUN_QUOTA) through libgaon and
// attaches it to that socket. With GAON_RUN_TCP=1 (gaon-run --tcp) the program's TCP
// sockets bound to the same port are attached to the instance too, whether they are bound
// before the UDP socket (memcached binds TCP first) or after. Anything that fails is a
// warning on stderr and the program runs on as if gaon were not there (fail-open). The
// control connection stays open for the program's life: the instance goes when the
// program does.
#include <dlfcn.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "gaon/libgaon.h"

namespace {

using bind_fn = int (*)(int, const sockaddr*, socklen_t);

std::mutex mu;
bool done = false;  // attached (or given up): later UDP binds are left alone
gaon_conn* conn = nullptr;
gaon_ik* ik = nullptr;
unsigned udp_port = 0;            // the attached UDP socket's port
int tcp_seen[8], n_tcp_seen = 0;  // TCP sockets bound before the UDP one

const char* env(const char* k) {
  const char* v = std::getenv(k);
  return v ? v : "";
}

// The socket's type and IPv4 port (0: not a bound IPv4 socket).
unsigned bound_port(int fd, int* type) {
  socklen_t len = sizeof(*type);
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, type, &len) != 0) return 0;
  sockaddr_storage ss{};
  len = sizeof(ss);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0 || ss.ss_family != AF_INET)
    return 0;
  return ntohs(reinterpret_cast<const sockaddr_in*>(&ss)->sin_port);
}

bool matches(int fd) {
  int type = 0;
  const unsigned port = bound_port(fd, &type);
  if (port == 0 || type != SOCK_DGRAM) return false;
  const std::string m = env("GAON_RUN_MATCH");
  if (m.empty()) return true;  // the first UDP bind
  return m == "udp:" + std::to_string(port);
}

void attach_tcp(int fd) {
  if (gaon_ik_attach(ik, fd) != GAON_OK)
    std::fprintf(stderr, "gaon-run: warning: TCP socket: %s\n", gaon_last_error(conn));
  else
    std::fprintf(stderr, "gaon-run: %s instance %u attached to the program's TCP socket too\n",
                 env("GAON_RUN_IKERNEL"), gaon_ik_id(ik));
}

void attach(int fd) {
  const char* control = env("GAON_RUN_CONTROL");
  if (gaon_connect(*control ? control : nullptr, &conn) != GAON_OK) {
    std::fprintf(stderr, "gaon-run: warning: %s; running without gaon\n", gaon_last_error(nullptr));
    return;
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
    ik = nullptr;
    return;
  }
  std::fprintf(stderr, "gaon-run: %s instance %u attached to the program's socket\n",
               env("GAON_RUN_IKERNEL"), gaon_ik_id(ik));
  int type = 0;
  udp_port = bound_port(fd, &type);
  for (int i = 0; i < n_tcp_seen; ++i)  // still a TCP socket on the same port?
    if (bound_port(tcp_seen[i], &type) == udp_port && type == SOCK_STREAM) attach_tcp(tcp_seen[i]);
  n_tcp_seen = 0;
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
      else if (ik != nullptr && port == udp_port)
        attach_tcp(fd);
    }
  }
  errno = saved;
  return r;
}

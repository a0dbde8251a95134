#include "procs.h"

#include "frames.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace gaon::test {

namespace {

bool bindable(int type, uint16_t port) {
  const int fd = socket(AF_INET, type, 0);
  if (fd < 0) return false;
  const int one = 1;
  if (type == SOCK_STREAM) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  const sockaddr_in a = loopback(port);
  const bool ok = bind(fd, reinterpret_cast<const sockaddr*>(&a), sizeof(a)) == 0;
  close(fd);
  return ok;
}

// The ports the kernel hands out to unbound sockets (connect, bind to port 0).
std::pair<unsigned, unsigned> ephemeral_range() {
  unsigned lo = 32768, hi = 60999;
  std::ifstream("/proc/sys/net/ipv4/ip_local_port_range") >> lo >> hi;
  return {lo, hi};
}

}  // namespace

int socket_in(const std::string& ns, int type, int family) {
  int fd = -1;
  std::thread t([&] {
    const int nsfd = open(("/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
    if (nsfd >= 0 && setns(nsfd, CLONE_NEWNET) == 0) fd = socket(family, type | SOCK_CLOEXEC, 0);
    if (nsfd >= 0) close(nsfd);
  });
  t.join();
  return fd;
}

int take_testbed(std::string* why) {
  const int fd = open("/tmp/gaon-testbed.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0666);
  if (fd < 0 || flock(fd, LOCK_EX) != 0) {
    *why = std::string("/tmp/gaon-testbed.lock: ") + strerror(errno);
    if (fd >= 0) close(fd);
    return -1;
  }
  const auto up = run({"/bin/bash", std::string(GAON_SOURCE_DIR) + "/scripts/testbed", "up"},
                      std::chrono::seconds(30));
  if (up.status != 0) {
    *why = "scripts/testbed up: " + up.out + up.err;
    close(fd);
    return -1;
  }
  // libxdp's bpffs, where every `ip netns exec` sees it (scripts/testbed up mounts it):
  // gaond's dispatcher and xdp-loader's view of it must be the same.
  setenv("LIBXDP_BPFFS", "/run/gaon-testbed/bpffs", 1);
  return fd;
}

sockaddr_in addr(const char* ip, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, ip, &a.sin_addr);
  return a;
}

sockaddr_in6 addr6(const char* ip, uint16_t port) {
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_port = htons(port);
  inet_pton(AF_INET6, ip, &a.sin6_addr);
  return a;
}

int tcp_connect_in(const std::string& ns, const sockaddr_in6& to) {
  const int fd = socket_in(ns, SOCK_STREAM, AF_INET6);
  if (fd < 0) return -1;
  for (int i = 0; i < 100; ++i) {
    if (connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof(to)) == 0) {
      const int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      return fd;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  close(fd);
  return -1;
}

uint16_t free_port() {
  // Ports come from below the ephemeral range, so no client socket of a concurrently
  // running test is handed one between our check and the server's bind, and each port
  // is reserved with a lock file held until this process exits, so two calls (in this
  // process or in another test running beside it) never return the same one.
  const auto [eph_lo, eph_hi] = ephemeral_range();
  unsigned lo = 20000, hi = eph_lo;  // [lo, hi)
  if (hi < lo + 1000) lo = eph_hi + 1, hi = 65536;
  if (hi < lo + 1000) lo = 10000, hi = 65536;
  static const char* dir = "/tmp/gaon-test-ports";
  mkdir(dir, 01777);
  chmod(dir, 01777);
  static unsigned next = lo + static_cast<unsigned>(getpid()) * 7919u % (hi - lo);
  for (unsigned tries = 0; tries < hi - lo; ++tries) {
    const auto port = static_cast<uint16_t>(next);
    next = next + 1 < hi ? next + 1 : lo;
    const std::string lock = std::string(dir) + "/" + std::to_string(port);
    const int fd = open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) != 0) {
      close(fd);
      continue;  // another test holds it
    }
    if (bindable(SOCK_DGRAM, port) && bindable(SOCK_STREAM, port)) return port;  // fd kept
    if (fd >= 0) close(fd);
  }
  throw std::runtime_error("no free port");
}

sockaddr_in loopback(uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  return a;
}

int bind_udp(uint16_t port) {
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  const sockaddr_in a = loopback(port);
  if (fd >= 0 && bind(fd, reinterpret_cast<const sockaddr*>(&a), sizeof(a)) == 0) return fd;
  if (fd >= 0) close(fd);
  return -1;
}

Child start_sidecar_gaond(uint16_t wire_port, uint16_t host_port, const std::string& control) {
  return Child::start({std::string(GAON_BIN_DIR) + "/gaond", "--wire",
                       "udp:127.0.0.1:" + std::to_string(wire_port), "--host",
                       "udp:127.0.0.1:" + std::to_string(host_port), "--control", control});
}

std::optional<std::string> udp_ask(int fd, const sockaddr_in& to, const std::string& what,
                                   std::chrono::milliseconds wait) {
  sendto(fd, what.data(), what.size(), 0, reinterpret_cast<const sockaddr*>(&to), sizeof(to));
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, int(wait.count())) <= 0) return std::nullopt;
  char buf[2048];
  const ssize_t n = recv(fd, buf, sizeof(buf), 0);
  if (n < 0) return std::nullopt;
  return std::string(buf, size_t(n));
}

Child Child::start(const std::vector<std::string>& argv) {
  Child c;
  char out_tmpl[] = "/tmp/gaon-child-out-XXXXXX";
  char err_tmpl[] = "/tmp/gaon-child-err-XXXXXX";
  const int out = mkstemp(out_tmpl);
  const int err = mkstemp(err_tmpl);
  c.out_path_ = out_tmpl;
  c.err_path_ = err_tmpl;
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  c.pid_ = fork();
  if (c.pid_ == 0) {
    dup2(out, 1);
    dup2(err, 2);
    execv(args[0], args.data());
    _exit(127);
  }
  close(out);
  close(err);
  return c;
}

Child::Child(Child&& o) noexcept { *this = std::move(o); }
Child& Child::operator=(Child&& o) noexcept {
  std::swap(pid_, o.pid_);
  std::swap(status_, o.status_);
  std::swap(out_path_, o.out_path_);
  std::swap(err_path_, o.err_path_);
  return *this;
}

Child::~Child() {
  if (pid_ > 0) stop(std::chrono::milliseconds(2000));
  if (!out_path_.empty()) unlink(out_path_.c_str());
  if (!err_path_.empty()) unlink(err_path_.c_str());
}

bool Child::running() {
  if (pid_ <= 0) return false;
  int st;
  if (waitpid(pid_, &st, WNOHANG) != pid_) return true;
  status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);  // reaped: keep its status
  pid_ = -1;
  return false;
}

void Child::signal(int sig) {
  if (pid_ > 0) kill(pid_, sig);
}

int Child::stop(std::chrono::milliseconds wait) {
  if (pid_ <= 0) return status_;
  kill(pid_, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + wait;
  int st = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    if (waitpid(pid_, &st, WNOHANG) == pid_) {
      pid_ = -1;
      status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      return status_;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill(pid_, SIGKILL);
  waitpid(pid_, &st, 0);
  pid_ = -1;
  return -1;
}

static std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}
std::string Child::output() const { return slurp(out_path_); }
std::string Child::errors() const { return slurp(err_path_); }

bool Child::wait_for(const std::string& text, bool on_stderr, std::chrono::milliseconds wait) {
  const auto until = std::chrono::steady_clock::now() + wait;
  for (;;) {
    const bool alive = running();  // before reading, so what it wrote last is seen
    if ((on_stderr ? errors() : output()).find(text) != std::string::npos) return true;
    if (!alive || std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

Ran run(const std::vector<std::string>& argv, std::chrono::milliseconds wait) {
  Child c = Child::start(argv);
  const auto until = std::chrono::steady_clock::now() + wait;
  while (c.running() && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  Ran r;
  r.status = c.stop(std::chrono::milliseconds(100));
  r.out = c.output();
  r.err = c.errors();
  return r;
}

namespace {

// The shared libraries `exe` loads from under directory `root`, as ldd resolves them:
// {the name it is loaded by, the file found}. Sets `err` when ldd fails or a library is
// missing.
std::vector<std::pair<std::string, std::string>> libs_under(const std::string& exe,
                                                            const std::string& root,
                                                            std::string& err) {
  namespace fs = std::filesystem;
  const Ran r = run({"/usr/bin/ldd", exe});
  if (r.out.find("not a dynamic executable") != std::string::npos ||
      r.err.find("not a dynamic executable") != std::string::npos)
    return {};
  if (r.status != 0) {
    err = "ldd " + exe + " failed (status " + std::to_string(r.status) + "): " + r.err;
    return {};
  }
  std::error_code ec;
  const std::string base = fs::weakly_canonical(root, ec).string() + "/";
  std::vector<std::pair<std::string, std::string>> libs;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    const size_t arrow = line.find(" => ");
    if (arrow == std::string::npos) continue;  // the vdso, the dynamic loader
    const size_t b = line.find_first_not_of(" \t");
    const std::string name = line.substr(b, arrow - b);
    std::string path = line.substr(arrow + 4);
    path = path.substr(0, path.find(" ("));
    if (path == "not found") {
      err = exe + " needs " + name + ", which ldd does not find";
      return {};
    }
    if (fs::weakly_canonical(path, ec).string().rfind(base, 0) == 0) libs.emplace_back(name, path);
  }
  return libs;
}

// Empty when `uid`:`gid` (no supplementary groups) may access each file with its mode
// (access(2): X_OK, R_OK), through every directory above it; otherwise why not.
std::string probe_access(uid_t uid, gid_t gid,
                         const std::vector<std::pair<std::string, int>>& files) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return std::string("pipe: ") + strerror(errno);
  const pid_t pid = fork();
  if (pid < 0) {
    close(p[0]);
    close(p[1]);
    return std::string("fork: ") + strerror(errno);
  }
  if (pid == 0) {  // {index of the file, errno}; index -1: the change of user failed
    int res[2] = {-1, 0};
    if (setgroups(0, nullptr) != 0 || setresgid(gid, gid, gid) != 0 ||
        setresuid(uid, uid, uid) != 0) {
      res[1] = errno;
    } else {
      for (size_t i = 0; i < files.size(); ++i)
        if (access(files[i].first.c_str(), files[i].second) != 0) {
          res[0] = int(i);
          res[1] = errno;
          break;
        }
    }
    if (res[1] != 0 && write(p[1], res, sizeof(res)) != sizeof(res)) _exit(2);
    _exit(res[1] != 0);
  }
  close(p[1]);
  int res[2] = {0, 0};
  const ssize_t n = read(p[0], res, sizeof(res));
  close(p[0]);
  int st = 0;
  waitpid(pid, &st, 0);
  const std::string who = "uid " + std::to_string(uid) + " gid " + std::to_string(gid);
  if (n == ssize_t(sizeof(res))) {
    if (res[0] < 0) return "cannot become " + who + ": " + strerror(res[1]);
    const auto& [path, mode] = files[size_t(res[0])];
    return who + " cannot " + (mode == X_OK ? "execute " : "read ") + path + ": " +
           strerror(res[1]);
  }
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) return "the access check as " + who + " failed";
  return "";
}

}  // namespace

AsOtherUsers::AsOtherUsers(const std::vector<std::string>& programs, const std::vector<uid_t>& uids,
                           gid_t gid)
    : gid_(gid) {
  namespace fs = std::filesystem;
  if (access("/usr/bin/setpriv", X_OK) != 0) {
    unusable_ = "/usr/bin/setpriv (util-linux) is missing";
    return;
  }
  char tmpl[] = "/tmp/gaon-as-user-XXXXXX";
  if (!mkdtemp(tmpl)) {
    unusable_ = std::string("cannot make a directory under /tmp: ") + strerror(errno);
    return;
  }
  dir_ = tmpl;
  std::vector<std::pair<std::string, int>> copies = {{dir_, X_OK}};
  try {
    fs::permissions(dir_, fs::perms(0755));
    for (const auto& program : programs) {
      const std::string exe = std::string(GAON_BIN_DIR) + "/" + program;
      std::vector<std::pair<std::string, std::string>> files = {{program, exe}};
      for (auto& lib : libs_under(exe, GAON_BIN_DIR, unusable_)) files.push_back(lib);
      if (!unusable_.empty()) return;
      for (const auto& [name, from] : files) {
        const std::string to = dir_ + "/" + name;
        fs::copy_file(from, to, fs::copy_options::overwrite_existing);  // follows symlinks
        fs::permissions(to, fs::perms(0755));
        copies.emplace_back(to, name == program ? X_OK : R_OK);
      }
    }
  } catch (const fs::filesystem_error& e) {
    unusable_ = std::string("cannot copy the programs into ") + dir_ + ": " + e.what();
    return;
  }
  for (const uid_t uid : uids)
    if (unusable_ = probe_access(uid, gid, copies); !unusable_.empty()) return;
}

AsOtherUsers::~AsOtherUsers() {
  std::error_code ec;
  if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
}

std::vector<std::string> AsOtherUsers::argv(uid_t uid, const std::string& program,
                                            const std::vector<std::string>& args) const {
  std::vector<std::string> argv = {"/usr/bin/setpriv",
                                   "--reuid=" + std::to_string(uid),
                                   "--regid=" + std::to_string(gid_),
                                   "--clear-groups",
                                   "/usr/bin/env",
                                   "LD_LIBRARY_PATH=" + dir_,
                                   dir_ + "/" + program};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

void ipv6_at(std::initializer_list<Ipv6End> ends, bool on) {
  for (const Ipv6End& e : ends) {
    for (const char* d : {e.dev, "lo"})
      run({"/usr/bin/ip", "netns", "exec", e.ns, "/usr/sbin/sysctl", "-qw",
           "net.ipv6.conf." + std::string(d) + ".disable_ipv6=" + (on ? "0" : "1")});
    if (on)
      run({"/usr/bin/ip", "-n", e.ns, "-6", "addr", "replace", std::string(e.ip) + "/64", "dev",
           e.dev, "nodad"});
  }
}

std::vector<std::string> memcached_argv(uint16_t port, const std::string& ip) {
  std::vector<std::string> argv = {"/usr/bin/memcached",
                                   "-U",
                                   std::to_string(port),
                                   "-p",
                                   std::to_string(port),
                                   "-l",
                                   ip,
                                   "-t",
                                   "1",
                                   "-m",
                                   "64"};
  if (geteuid() == 0) argv.insert(argv.end(), {"-u", "nobody"});
  return argv;
}

std::optional<Child> start_memcached(uint16_t port) {
  if (access("/usr/bin/memcached", X_OK) != 0) return std::nullopt;
  Child c = Child::start(memcached_argv(port));
  if (!wait_udp_ready(port)) return std::nullopt;
  return c;
}

McUdp::McUdp(uint16_t port) : McUdp(socket(AF_INET, SOCK_DGRAM, 0), loopback(port)) {}
McUdp::McUdp(int fd, const sockaddr_in& to) : fd_(fd), to_len_(sizeof(to)) {
  std::memcpy(&to_, &to, sizeof(to));
}
McUdp::McUdp(int fd, const sockaddr_in6& to) : fd_(fd), to_len_(sizeof(to)) {
  std::memcpy(&to_, &to, sizeof(to));
}
McUdp::~McUdp() { close(fd_); }

std::optional<std::string> McUdp::reply_to(const std::string& body, uint16_t req_id,
                                           std::chrono::milliseconds wait) {
  send(body, req_id);
  std::optional<std::string> d;
  while ((d = recv(wait)))
    if (d->size() >= 8 && uint16_t(uint8_t((*d)[0]) << 8 | uint8_t((*d)[1])) == req_id) break;
  return d;
}

void McUdp::send(const std::string& body, uint16_t req_id) {
  const std::string d = mc_dgram(body, req_id);
  sendto(fd_, d.data(), d.size(), 0, reinterpret_cast<const sockaddr*>(&to_), to_len_);
}

std::optional<std::string> McUdp::recv(std::chrono::milliseconds wait) {
  pollfd p{fd_, POLLIN, 0};
  if (poll(&p, 1, int(wait.count())) <= 0) return std::nullopt;
  char buf[65536];
  const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
  if (n < 0) return std::nullopt;
  return std::string(buf, size_t(n));
}

std::vector<std::string> McUdp::ask(const std::string& body, uint16_t req_id, size_t expect,
                                    std::chrono::milliseconds quiet) {
  send(body, req_id);
  std::vector<std::string> out;
  while (expect == 0 || out.size() < expect) {
    auto d = recv(expect ? std::chrono::milliseconds(3000) : quiet);
    if (!d) break;
    out.push_back(*d);
  }
  return out;
}

void flood_udp(const std::vector<int>& fds, const sockaddr_in& to, const std::atomic<bool>& stop,
               std::atomic<uint64_t>& offered, std::chrono::microseconds pace) {
  char payload[64] = "flood";
  iovec iov{payload, sizeof(payload)};
  mmsghdr m[32];
  for (auto& x : m) {
    x = {};
    x.msg_hdr.msg_name = const_cast<sockaddr_in*>(&to);
    x.msg_hdr.msg_namelen = sizeof(to);
    x.msg_hdr.msg_iov = &iov;
    x.msg_hdr.msg_iovlen = 1;
  }
  char sink[2048];
  auto next = std::chrono::steady_clock::now();
  for (size_t k = 0; !stop && !fds.empty(); ++k) {
    const int fd = fds[k % fds.size()];
    const int n = sendmmsg(fd, m, 32, MSG_DONTWAIT);
    if (n > 0) offered += uint64_t(n);
    while (recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0) {
    }
    if (pace.count() > 0) std::this_thread::sleep_until(next += pace);
  }
}

uint64_t rss_kib(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6));
  return 0;
}

bool wait_udp_ready(uint16_t port, std::chrono::milliseconds wait) {
  McUdp c(port);
  const auto deadline = std::chrono::steady_clock::now() + wait;
  while (std::chrono::steady_clock::now() < deadline) {
    c.send("version\r\n", 1);
    if (c.recv(std::chrono::milliseconds(100))) return true;
  }
  return false;
}

std::string tcp_command(uint16_t port, const std::string& cmd, const std::string& until) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  const sockaddr_in a = loopback(port);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof(a)) != 0) {
    close(fd);
    return "";
  }
  ::send(fd, cmd.data(), cmd.size(), 0);
  std::string got;
  char buf[4096];
  while (got.find(until) == std::string::npos) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 3000) <= 0) break;
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    got.append(buf, size_t(n));
  }
  close(fd);
  return got;
}

std::string scrape(uint16_t port, const std::string& ns) {
  const int fd =
      ns.empty() ? socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0) : socket_in(ns, SOCK_STREAM);
  const sockaddr_in to = loopback(port);
  if (fd < 0 || connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof(to)) != 0) {
    if (fd >= 0) close(fd);
    return "";
  }
  const std::string req = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  (void)!write(fd, req.data(), req.size());
  std::string resp;
  char buf[65536];
  for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;) resp.append(buf, size_t(n));
  close(fd);
  const auto body = resp.find("\r\n\r\n");
  return resp.starts_with("HTTP/1.") && resp.find(" 200 ") != std::string::npos &&
                 body != std::string::npos
             ? resp.substr(body + 4)
             : "";
}

double sample(const std::string& text, const std::string& series) {
  for (size_t at = 0; (at = text.find(series, at)) != std::string::npos; ++at) {
    if (at != 0 && text[at - 1] != '\n') continue;
    const auto end = text.find('\n', at);
    const std::string line = text.substr(at, end - at);
    return std::stod(line.substr(line.rfind(' ') + 1));
  }
  return -1;
}

}  // namespace gaon::test

#include "gaon/control_server.h"

#include <arpa/inet.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "gaon/capture.h"
#include "gaon/clock.h"
#include "gaon/params.h"
#include "state_file.h"

namespace gaon::control {

namespace {

struct Conn {
  int fd = -1;
  uint64_t serial = 0;  // never reused, unlike fds
  uint32_t uid = 0;
  pid_t pid = 0;
  FrameReader reader;
  std::string out;       // reply bytes not yet written
  std::deque<int> fds;   // descriptors received (SCM_RIGHTS), oldest first
  bool overrun = false;  // its unread replies passed the backlog: it is dropped
};

struct Owned {
  uint32_t uid = 0;
  uint64_t conn = 0;  // the connection whose close destroys it; 0 = persistent
  std::string type;
  uint64_t bytes = 0;  // state it holds (counts against its owner's limit)
  std::vector<FlowKey> flows;
  // What the state file records, for persistent instances made through the protocol
  // (recorded); adopt()ed ones are made again from gaond's command line.
  bool recorded = false;
  std::vector<std::string> params;  // as given
  uint64_t quota = 0;
  TrafficClass tc;
};

std::string addr_string(const sockaddr_in& a) {
  char ip[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &a.sin_addr, ip, sizeof(ip));
  return fmt::format("{}:{}", ip, ntohs(a.sin_port));
}

// The IPv4 address of `ss`: an AF_INET one, or an IPv4 address on a dual-stack socket
// (::ffff:a.b.c.d); none for anything else.
std::optional<sockaddr_in> ipv4_of(const sockaddr_storage& ss) {
  sockaddr_in a{};
  if (ss.ss_family == AF_INET) {
    std::memcpy(&a, &ss, sizeof(a));
    return a;
  }
  if (ss.ss_family != AF_INET6) return std::nullopt;
  sockaddr_in6 a6;
  std::memcpy(&a6, &ss, sizeof(a6));
  if (!IN6_IS_ADDR_V4MAPPED(&a6.sin6_addr)) return std::nullopt;
  a.sin_family = AF_INET;
  a.sin_port = a6.sin6_port;
  std::memcpy(&a.sin_addr, &a6.sin6_addr.s6_addr[12], 4);
  return a;
}

// "IP:PORT" or "[IP6]:PORT" (an IPv4 address on a dual-stack socket as IPv4); "" for
// another family.
std::string addr_string(const sockaddr_storage& ss) {
  if (auto a = ipv4_of(ss)) return addr_string(*a);
  if (ss.ss_family != AF_INET6) return "";
  sockaddr_in6 a6;
  std::memcpy(&a6, &ss, sizeof(a6));
  char ip[INET6_ADDRSTRLEN] = {};
  inet_ntop(AF_INET6, &a6.sin6_addr, ip, sizeof(ip));
  return fmt::format("[{}]:{}", ip, ntohs(a6.sin6_port));
}

// The flow of a socket bound to `local` ("IP:PORT"): when it is connected, only its
// conversation (the exact 5-tuple).
Result<FlowKey> own_flow(int fd, const char* l4, const std::string& local) {
  sockaddr_storage peer{};
  socklen_t len = sizeof(peer);
  std::string remote;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) == 0) {
    remote = addr_string(peer);
    if (!remote.empty()) remote.insert(0, ",");
  }
  return FlowKey::parse(fmt::format("{}:{}{}", l4, local, remote));
}

}  // namespace

// A capture in progress (op "capture"): its ring, the descriptor the pcapng goes to (a
// socket the client passed), and the request to answer when it ends.
struct Cap {
  uint32_t instance = 0;
  uint64_t conn = 0;  // the connection that asked (its serial)
  int conn_fd = -1;
  nlohmann::json request;
  int out = -1;
  std::unique_ptr<Capture> ring;
  std::string buf;        // pcapng bytes not yet sent
  int64_t offset_ns = 0;  // monotonic -> realtime
  uint64_t deadline_ns = 0;
  bool failed = false;
};

struct Server::Impl {
  Engine& engine;
  const Registry& reg;
  ServerOptions opt;
  std::vector<Service> services;
  int listen_fd = -1, ep = -1, wake = -1;
  std::map<int, Conn> conns;
  std::map<uint32_t, Owned> owned;
  std::mutex owned_mu;  // adopt() runs on gaond's main thread
  uint64_t next_serial = 1;
  std::thread thread;
  std::optional<StateFile> state;  // recording persistent instances (opt.state_dir)
  std::vector<std::unique_ptr<Cap>> captures;

  Impl(Engine& e, const Registry& r, ServerOptions o, std::vector<Service> s)
      : engine(e), reg(r), opt(std::move(o)), services(std::move(s)) {}

  void run();
  void accept_clients();
  void read_client(Conn& c);
  bool flush(Conn& c);  // false: drop the client
  void drop(int fd);
  void log(const std::string& line);
  void restore_state();
  void save_state();
  Result<uint32_t> create_instance(uint32_t uid, uint64_t conn, const std::string& type,
                                   const std::vector<std::string>& params, uint64_t quota,
                                   const TrafficClass& tc);
  nlohmann::json handle(Conn& c, const Request& r);

  Result<nlohmann::json> op_types();
  Result<nlohmann::json> op_create(Conn& c, const nlohmann::json& m);
  Result<nlohmann::json> op_destroy(Conn& c, const nlohmann::json& m);
  Result<nlohmann::json> op_list(Conn& c);
  Result<nlohmann::json> op_call(Conn& c, const nlohmann::json& m);
  Result<nlohmann::json> op_stats(Conn& c, const nlohmann::json& m);
  Result<nlohmann::json> op_attach(Conn& c, const nlohmann::json& m, int fd);
  Result<nlohmann::json> op_detach(Conn& c, const nlohmann::json& m);
  Result<nlohmann::json> op_capture(Conn& c, const Request& r, int& fd);
  void service_captures(bool stopping);
  Result<std::vector<FlowKey>> flows_of_socket(int fd);
  Result<std::vector<FlowKey>> flows_of_socket6(int fd, const char* l4,
                                                const sockaddr_storage& local);
  Result<uint32_t> authorize(const Conn& c, const nlohmann::json& m);
  nlohmann::json describe(uint32_t id, const Owned& o);
};

// ---------------------------------------------------------------- start / stop

Result<std::unique_ptr<Server>> Server::start(Engine& engine, const Registry& reg,
                                              ServerOptions opt, std::vector<Service> services) {
  auto impl = std::make_unique<Impl>(engine, reg, std::move(opt), std::move(services));
  const std::string& path = impl->opt.path;
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(a.sun_path))
    return make_error("--control {}: not a usable socket path", path);
  std::memcpy(a.sun_path, path.data(), path.size());
  if (auto slash = path.rfind('/'); slash != std::string::npos && slash > 0) {
    const std::string dir = path.substr(0, slash);
    if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST)
      return make_error("--control {}: cannot create {}: {}", path, dir, std::strerror(errno));
  }
  // A socket file left by a gaond that died is replaced; a live one is not.
  if (auto probe = Client::connect(path))
    return make_error("--control {}: another gaond is listening there", path);
  struct stat st {};
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return make_error("--control {}: exists and is not a socket", path);
    unlink(path.c_str());
  }
  impl->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (impl->listen_fd < 0) return make_error("socket: {}", std::strerror(errno));
  if (bind(impl->listen_fd, reinterpret_cast<const sockaddr*>(&a), sizeof(a)) != 0)
    return make_error("--control {}: {}", path, std::strerror(errno));
  chmod(path.c_str(), 0666);  // every local user may connect; requests are authorized
  if (listen(impl->listen_fd, 64) != 0) return make_error("listen: {}", std::strerror(errno));
  impl->ep = epoll_create1(EPOLL_CLOEXEC);
  impl->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (impl->ep < 0 || impl->wake < 0) return make_error("epoll/eventfd: {}", std::strerror(errno));
  for (int fd : {impl->listen_fd, impl->wake}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    epoll_ctl(impl->ep, EPOLL_CTL_ADD, fd, &ev);
  }
  if (!impl->opt.state_dir.empty()) {
    auto sf = StateFile::open(impl->opt.state_dir);
    if (sf) {
      impl->state.emplace(std::move(*sf));
      impl->restore_state();
    } else {
      impl->log(sf.error() + "; persistent instances will not outlive this gaond");
    }
  }
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->run(); });
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Server::~Server() {
  const uint64_t one = 1;
  if (write(impl_->wake, &one, sizeof(one)) < 0) {
  }
  if (impl_->thread.joinable()) impl_->thread.join();
  while (!impl_->conns.empty()) impl_->drop(impl_->conns.begin()->first);
  close(impl_->listen_fd);
  unlink(impl_->opt.path.c_str());
  close(impl_->ep);
  close(impl_->wake);
}

void Server::adopt(uint32_t id, uint32_t uid, const std::string& type, uint64_t bytes,
                   std::vector<FlowKey> flows) {
  std::lock_guard lk(impl_->owned_mu);
  impl_->owned[id] = Owned{.uid = uid, .type = type, .bytes = bytes, .flows = std::move(flows)};
}

void Server::forget(uint32_t id) {
  std::lock_guard lk(impl_->owned_mu);
  impl_->owned.erase(id);
}

// ---------------------------------------------------------------- the state file

void Server::Impl::log(const std::string& line) {
  if (opt.log)
    opt.log(line);
  else
    fmt::print(stderr, "gaond: {}\n", line);
}

// Before the control thread starts: nothing else touches `owned` yet.
void Server::Impl::restore_state() {
  auto saved = state->load(reg);
  if (!saved) {
    log(saved.error() + "; starting without it");
  } else {
    std::sort(saved->begin(), saved->end(),
              [](const SavedInstance& a, const SavedInstance& b) { return a.id < b.id; });
    size_t restored = 0, flows = 0;
    for (const SavedInstance& s : *saved) {
      const std::string what = fmt::format("state file {}: instance {} ({}, uid {})", state->path(),
                                           s.id, s.type, s.owner);
      auto id = create_instance(s.owner, 0, s.type, s.params, s.quota, s.tc);
      if (!id) {
        log(fmt::format("{} not restored: {}", what, id.error()));
        continue;
      }
      ++restored;
      for (const FlowKey& k : s.flows) {
        if (auto r = engine.add_flow(k, *id); !r) {
          log(fmt::format("{}: flow {} not restored: {}", what, k.to_string(), r.error()));
          continue;
        }
        ++flows;
        std::lock_guard lk(owned_mu);
        owned[*id].flows.push_back(k);
      }
    }
    log(fmt::format("state file {}: restored {} of {} persistent instances, {} flows",
                    state->path(), restored, saved->size(), flows));
  }
  save_state();  // the ids it has now, and only what came back
}

void Server::Impl::save_state() {
  if (!state) return;
  std::vector<SavedInstance> out;
  {
    std::lock_guard lk(owned_mu);
    for (const auto& [id, o] : owned)
      if (o.recorded)
        out.push_back({.id = id,
                       .type = o.type,
                       .owner = o.uid,
                       .params = o.params,
                       .quota = o.quota,
                       .bytes = o.bytes,
                       .tc = o.tc,
                       .flows = o.flows});
  }
  if (auto r = state->save(out); !r) log(r.error());
}

// ---------------------------------------------------------------- the loop

void Server::Impl::run() {
  epoll_event ev[32];
  for (;;) {
    // While a capture runs, its ring is emptied every 10 ms.
    const int n = epoll_wait(ep, ev, 32, captures.empty() ? -1 : 10);
    if (!captures.empty()) service_captures(false);
    for (int i = 0; i < n; ++i) {
      const int fd = ev[i].data.fd;
      if (fd == wake) {
        service_captures(true);
        return;
      }
      if (fd == listen_fd) {
        accept_clients();
        continue;
      }
      auto it = conns.find(fd);
      if (it == conns.end()) continue;
      if (ev[i].events & (EPOLLHUP | EPOLLERR)) {
        drop(fd);
        continue;
      }
      if (ev[i].events & EPOLLIN) read_client(it->second);
      if (auto again = conns.find(fd); again != conns.end() && !flush(again->second)) drop(fd);
    }
  }
}

void Server::Impl::accept_clients() {
  for (;;) {
    const int fd = accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    if (conns.size() >= opt.max_clients) {
      const std::string msg = frame(error_reply(nullptr, "gaond: too many control clients"));
      if (send(fd, msg.data(), msg.size(), MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
      }
      close(fd);
      continue;
    }
    ucred cred{};
    socklen_t len = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
      close(fd);
      continue;
    }
    Conn& c = conns[fd];
    c.fd = fd;
    c.serial = next_serial++;
    c.uid = cred.uid;
    c.pid = cred.pid;
    epoll_event e{};
    e.events = EPOLLIN;
    e.data.fd = fd;
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
  }
}

void Server::Impl::read_client(Conn& c) {
  // At most 64 KiB per turn, so one flooding client cannot hold the others back.
  char buf[16384];
  for (int turn = 0; turn < 4; ++turn) {
    iovec iov{buf, sizeof(buf)};
    alignas(cmsghdr) char ctl[CMSG_SPACE(4 * sizeof(int))];
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = ctl;
    m.msg_controllen = sizeof(ctl);
    const ssize_t n = recvmsg(c.fd, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n == 0) {
      drop(c.fd);
      return;
    }
    if (n < 0) break;
    for (cmsghdr* h = CMSG_FIRSTHDR(&m); h != nullptr; h = CMSG_NXTHDR(&m, h)) {
      if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS) continue;
      const size_t k = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < k; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(h) + i * sizeof(int), sizeof(int));
        if (c.fds.size() < 16)
          c.fds.push_back(fd);
        else
          close(fd);
      }
    }
    c.reader.append({buf, size_t(n)});
    if (size_t(n) < sizeof(buf)) break;
  }
  // Requests are answered until the unread replies pass the backlog limit: the client is
  // dropped then, and the rest of what it sent costs nothing (a client that floods without
  // reading cannot keep the control thread from the others).
  while (auto e = c.out.size() > opt.max_backlog ? std::nullopt : c.reader.next()) {
    nlohmann::json reply;
    if (e->kind == FrameReader::Event::too_large) {
      reply = error_reply(nullptr, fmt::format("request of {} bytes is larger than the {} allowed",
                                               e->length, kMaxMessage));
    } else if (auto r = parse_request(e->body); !r) {
      const auto j = nlohmann::json::parse(e->body, nullptr, false);  // answer its id if any
      reply = error_reply(j.is_object() ? j.value("id", nlohmann::json()) : nlohmann::json(),
                          r.error());
    } else {
      reply = handle(c, *r);
      if (reply.is_null()) continue;  // answered later (a capture, when it ends)
    }
    c.out += frame(reply);
  }
  c.overrun = c.out.size() > opt.max_backlog;
  // Descriptors no attach took are not kept, unless a request is still arriving (the
  // descriptor travels with its request's first byte).
  if (c.reader.buffered() == 0) {
    while (!c.fds.empty()) {
      close(c.fds.front());
      c.fds.pop_front();
    }
  }
}

bool Server::Impl::flush(Conn& c) {
  while (!c.out.empty()) {
    const ssize_t n = send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      return false;
    }
    c.out.erase(0, size_t(n));
  }
  if (c.overrun || c.out.size() > opt.max_backlog) return false;  // it stopped reading them
  epoll_event e{};
  e.events = EPOLLIN | (c.out.empty() ? 0u : uint32_t(EPOLLOUT));
  e.data.fd = c.fd;
  epoll_ctl(ep, EPOLL_CTL_MOD, c.fd, &e);
  return true;
}

void Server::Impl::drop(int fd) {
  auto it = conns.find(fd);
  if (it == conns.end()) return;
  const uint64_t serial = it->second.serial;
  for (int f : it->second.fds) close(f);
  epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
  close(fd);
  conns.erase(it);
  // Instances tied to this connection go with it (their flows too).
  std::vector<uint32_t> gone;
  {
    std::lock_guard lk(owned_mu);
    for (const auto& [id, o] : owned)
      if (o.conn == serial) gone.push_back(id);
    for (uint32_t id : gone) owned.erase(id);
  }
  for (uint32_t id : gone) (void)engine.remove_instance(id);
}

// ---------------------------------------------------------------- operations

nlohmann::json Server::Impl::handle(Conn& c, const Request& r) {
  Result<nlohmann::json> res = make_error("unknown op '{}' (try \"types\")", r.op);
  int fd = -1;
  if ((r.op == "attach" || r.op == "capture") &&
      !c.fds.empty()) {  // the oldest descriptor not yet taken
    fd = c.fds.front();
    c.fds.pop_front();
  }
  if (r.op == "types")
    res = op_types();
  else if (r.op == "create")
    res = op_create(c, r.msg);
  else if (r.op == "destroy")
    res = op_destroy(c, r.msg);
  else if (r.op == "list")
    res = op_list(c);
  else if (r.op == "call")
    res = op_call(c, r.msg);
  else if (r.op == "stats")
    res = op_stats(c, r.msg);
  else if (r.op == "attach")
    res = op_attach(c, r.msg, fd);
  else if (r.op == "detach")
    res = op_detach(c, r.msg);
  else if (r.op == "capture") {
    res = op_capture(c, r, fd);
    if (res && res->is_null()) return nullptr;  // started: answered when it ends
  }
  if (fd >= 0) close(fd);  // gaond keeps no reference to the caller's socket
  if (res) return ok_reply(r.id, std::move(*res));
  const std::string& e = res.error();
  auto has = [&](const char* s) { return e.find(s) != std::string::npos; };
  const char* code = has("permission denied") || has("is for root")      ? "permission"
                     : has("per-owner limit") || has("but the quota is") ? "limit"
                     : has("already attached")                           ? "conflict"
                                                                         : "invalid";
  return error_reply(r.id, e, code);
}

Result<nlohmann::json> Server::Impl::op_types() {
  nlohmann::json out = nlohmann::json::array();
  for (const IKernelType* t : reg.list()) {
    nlohmann::json params = nlohmann::json::array(), ops = nlohmann::json::array();
    for (const auto& p : t->params)
      params.push_back({{"name", p.name},
                        {"type", std::string(to_string(p.type))},
                        {"default", p.default_value},
                        {"help", p.help}});
    for (const auto& o : t->ops)
      ops.push_back({{"name", o.name}, {"args", o.args}, {"help", o.help}});
    out.push_back(
        {{"name", t->name}, {"description", t->description}, {"params", params}, {"ops", ops}});
  }
  return out;
}

template <class T>
static Result<T> field(const nlohmann::json& m, const char* name, T fallback) {
  auto it = m.find(name);
  if (it == m.end() || it->is_null()) return fallback;
  if constexpr (std::is_same_v<T, std::string>) {
    if (!it->is_string()) return make_error("\"{}\" must be a string", name);
  } else if constexpr (std::is_same_v<T, bool>) {
    if (!it->is_boolean()) return make_error("\"{}\" must be true or false", name);
  } else {
    if (!it->is_number_unsigned()) return make_error("\"{}\" must be a non-negative integer", name);
  }
  return it->get<T>();
}

static Result<std::vector<std::string>> string_list(const nlohmann::json& m, const char* name) {
  std::vector<std::string> out;
  auto it = m.find(name);
  if (it == m.end() || it->is_null()) return out;
  if (!it->is_array()) return make_error("\"{}\" must be a list of strings", name);
  for (const auto& v : *it) {
    if (!v.is_string()) return make_error("\"{}\" must be a list of strings", name);
    out.push_back(v.get<std::string>());
  }
  return out;
}

Result<uint32_t> Server::Impl::authorize(const Conn& c, const nlohmann::json& m) {
  auto it = m.find("instance");
  if (it == m.end() || !it->is_number_unsigned())
    return make_error("\"instance\" (a number) is needed");
  const uint64_t id = it->get<uint64_t>();
  std::lock_guard lk(owned_mu);
  auto o = owned.find(uint32_t(id));
  if (id > UINT32_MAX || o == owned.end() || (c.uid != 0 && o->second.uid != c.uid))
    return make_error("instance {}: permission denied (or no such instance)", id);
  return uint32_t(id);
}

Result<nlohmann::json> Server::Impl::op_create(Conn& c, const nlohmann::json& m) {
  auto type = field<std::string>(m, "type", "");
  if (!type) return Error{type.error()};
  if (type->empty()) return make_error("\"type\" is needed (see \"types\")");
  auto params = string_list(m, "params");
  if (!params) return Error{params.error()};
  uint64_t quota = 64u << 20;
  if (auto q = m.find("quota"); q != m.end() && !q->is_null()) {
    if (q->is_number_unsigned()) {
      quota = q->get<uint64_t>();
    } else if (q->is_string()) {
      auto v = parse_param_value(ParamType::size, q->get<std::string>());
      if (!v) return make_error("\"quota\": {}", v.error());
      quota = std::get<uint64_t>(*v);
    } else {
      return make_error("\"quota\" must be bytes (a number or \"64M\")");
    }
  }
  auto weight = field<uint64_t>(m, "weight", 1);
  auto rate = field<uint64_t>(m, "rate_bps", 0);
  auto persist = field<bool>(m, "persist", false);
  if (!weight) return Error{weight.error()};
  if (!rate) return Error{rate.error()};
  if (!persist) return Error{persist.error()};
  if (*weight == 0 || *weight > 1000) return make_error("\"weight\" must be 1..1000");
  auto id = create_instance(c.uid, *persist ? 0 : c.serial, *type, *params, quota,
                            {.weight = uint32_t(*weight), .rate_bps = *rate});
  if (!id) return Error{id.error()};
  if (*persist) save_state();
  return nlohmann::json{{"instance", *id}};
}

// Creates an instance for `uid` (tied to connection `conn`; 0: persistent, recorded in the
// state file) within its owner's limits.
Result<uint32_t> Server::Impl::create_instance(uint32_t uid, uint64_t conn, const std::string& type,
                                               const std::vector<std::string>& params,
                                               uint64_t quota, const TrafficClass& tc) {
  // A non-root owner's quota is cut to what its limit has left, so nothing larger is ever
  // allocated.
  uint64_t left = UINT64_MAX;
  if (uid != 0) {
    std::lock_guard lk(owned_mu);
    uint64_t held = 0;
    for (const auto& [id, o] : owned)
      if (o.uid == uid) held += o.bytes;
    left = opt.max_state_per_owner - std::min(held, opt.max_state_per_owner);
  }
  const bool clamped = quota > left;
  if (clamped) quota = left;
  auto inst = Instance::create(
      {.type = type, .params = params, .owner_uid = uid, .state_quota = quota, .tc = tc}, reg);
  if (!inst)
    return clamped ? make_error("{} (per-owner limit: uid {} has {} state bytes left)",
                                inst.error(), uid, left)
                   : Error{inst.error()};
  const uint64_t bytes = (*inst)->state().size();  // what it really holds, not its quota
  if (uid != 0) {
    std::lock_guard lk(owned_mu);
    uint32_t n = 0;
    uint64_t held = 0;
    for (const auto& [id, o] : owned)
      if (o.uid == uid) ++n, held += o.bytes;
    if (n >= opt.max_instances_per_owner)
      return make_error("per-owner limit: uid {} already has {} instances", uid, n);
    if (held + bytes > opt.max_state_per_owner)
      return make_error("per-owner limit: {} more state bytes would exceed uid {}'s {} bytes",
                        bytes, uid, opt.max_state_per_owner);
  }
  auto id = engine.add_instance(std::move(*inst));
  if (!id) return Error{id.error()};
  {
    std::lock_guard lk(owned_mu);
    owned[*id] = Owned{.uid = uid,
                       .conn = conn,
                       .type = type,
                       .bytes = bytes,
                       .recorded = conn == 0,
                       .params = params,
                       .quota = quota,
                       .tc = tc};
  }
  return *id;
}

Result<nlohmann::json> Server::Impl::op_destroy(Conn& c, const nlohmann::json& m) {
  auto id = authorize(c, m);
  if (!id) return Error{id.error()};
  bool recorded = false;
  {
    std::lock_guard lk(owned_mu);
    auto o = owned.find(*id);
    recorded = o != owned.end() && o->second.recorded;
    owned.erase(*id);
  }
  if (recorded) save_state();
  auto inst = engine.remove_instance(*id);
  if (!inst) return Error{inst.error()};
  return nlohmann::json{{"instance", *id}};
}

nlohmann::json Server::Impl::describe(uint32_t id, const Owned& o) {
  nlohmann::json flows = nlohmann::json::array();
  for (const auto& f : o.flows) flows.push_back(f.to_string());
  nlohmann::json j = engine.instance_stats(id);
  j["instance"] = id;
  j["owner"] = o.uid;
  j["type"] = o.type;
  j["persist"] = o.conn == 0;
  j["flows"] = flows;
  return j;
}

Result<nlohmann::json> Server::Impl::op_list(Conn& c) {
  std::vector<std::pair<uint32_t, Owned>> mine;
  {
    std::lock_guard lk(owned_mu);
    for (const auto& [id, o] : owned)
      if (c.uid == 0 || o.uid == c.uid) mine.emplace_back(id, o);
  }
  nlohmann::json out = nlohmann::json::array();
  for (const auto& [id, o] : mine) out.push_back(describe(id, o));
  return out;
}

Result<nlohmann::json> Server::Impl::op_call(Conn& c, const nlohmann::json& m) {
  auto id = authorize(c, m);
  if (!id) return Error{id.error()};
  auto op = field<std::string>(m, "name", "");
  if (!op) return Error{op.error()};
  if (op->empty()) return make_error("\"name\" (the state operation) is needed");
  auto args = string_list(m, "args");
  if (!args) return Error{args.error()};
  return engine.call(*id, *op, *args);
}

Result<nlohmann::json> Server::Impl::op_stats(Conn& c, const nlohmann::json& m) {
  if (m.contains("instance")) {
    auto id = authorize(c, m);
    if (!id) return Error{id.error()};
    Owned o;
    {
      std::lock_guard lk(owned_mu);
      o = owned[*id];
    }
    return describe(*id, o);
  }
  nlohmann::json j = engine.stats();
  if (c.uid != 0 && j.contains("instances")) {  // others' instances are not the caller's business
    nlohmann::json mine = nlohmann::json::array();
    std::lock_guard lk(owned_mu);
    for (const auto& i : j["instances"]) {
      auto o = owned.find(i.value("id", 0u));
      if (o != owned.end() && o->second.uid == c.uid) mine.push_back(i);
    }
    j["instances"] = mine;
  }
  if (opt.more_stats && (c.uid == 0 || c.uid == getuid())) opt.more_stats(j);
  return j;
}

Result<std::vector<FlowKey>> Server::Impl::flows_of_socket(int fd) {
  int type = 0, proto = 0;
  socklen_t len = sizeof(int);
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0)
    return make_error("the descriptor passed is not a socket");
  len = sizeof(int);
  getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &len);
  const char* l4 = type == SOCK_DGRAM && proto == IPPROTO_UDP    ? "udp"
                   : type == SOCK_STREAM && proto == IPPROTO_TCP ? "tcp"
                                                                 : nullptr;
  if (l4 == nullptr) return make_error("only UDP and TCP sockets can be attached");
  sockaddr_storage ss{};
  len = sizeof(ss);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0 ||
      (ss.ss_family != AF_INET && ss.ss_family != AF_INET6))
    return make_error("only IPv4 and IPv6 sockets can be attached");
  const auto v4 = ipv4_of(ss);
  if (!v4) return flows_of_socket6(fd, l4, ss);
  const sockaddr_in local = *v4;
  if (local.sin_port == 0) return make_error("the socket is not bound to a port");
  std::vector<FlowKey> out;
  bool served = false;
  for (const Service& s : services) {
    if (s.host.sin_port != local.sin_port) continue;
    if (local.sin_addr.s_addr != htonl(INADDR_ANY) &&
        local.sin_addr.s_addr != s.host.sin_addr.s_addr)
      continue;
    served = true;
    if (std::string(l4) != "udp") continue;  // sidecar services carry UDP
    out.push_back(*FlowKey::parse(fmt::format("udp:{}", addr_string(s.wire))));
  }
  if (served && out.empty()) return make_error("sidecar services carry UDP only");
  if (!served) {
    if (local.sin_addr.s_addr == htonl(INADDR_ANY))
      return make_error(
          "the socket is bound to 0.0.0.0:{} and gaond serves no address with that port",
          ntohs(local.sin_port));
    auto k = own_flow(fd, l4, addr_string(local));
    if (!k) return Error{k.error()};
    out.push_back(*k);
  }
  return out;
}

// An IPv6 socket: attached by its own address, as an IPv4 one bound to an address no
// service has (sidecar services are IPv4).
Result<std::vector<FlowKey>> Server::Impl::flows_of_socket6(int fd, const char* l4,
                                                            const sockaddr_storage& ss) {
  sockaddr_in6 local;
  std::memcpy(&local, &ss, sizeof(local));
  if (local.sin6_port == 0) return make_error("the socket is not bound to a port");
  if (IN6_IS_ADDR_UNSPECIFIED(&local.sin6_addr))
    return make_error("the socket is bound to [::]:{}; bind it to one address to attach it",
                      ntohs(local.sin6_port));
  auto k = own_flow(fd, l4, addr_string(ss));
  if (!k) return Error{k.error()};
  return std::vector<FlowKey>{*k};
}

Result<nlohmann::json> Server::Impl::op_attach(Conn& c, const nlohmann::json& m, int fd) {
  auto id = authorize(c, m);
  if (!id) return Error{id.error()};
  std::vector<FlowKey> keys;
  if (fd >= 0) {
    auto k = flows_of_socket(fd);
    if (!k) return Error{k.error()};
    keys = std::move(*k);
  } else {
    auto flow = field<std::string>(m, "flow", "");
    if (!flow) return Error{flow.error()};
    if (flow->empty())
      return make_error("attach needs a socket (passed with the request) or a \"flow\"");
    if (c.uid != 0)
      return make_error("attaching by address is for root (the operator); pass the socket instead");
    auto k = FlowKey::parse(*flow);
    if (!k) return Error{k.error()};
    keys.push_back(*k);
  }
  std::vector<FlowKey> added;
  for (const FlowKey& k : keys) {
    if (auto r = engine.add_flow(k, *id); !r) {
      for (const FlowKey& a : added) (void)engine.remove_flow(a);
      return Error{r.error()};
    }
    added.push_back(k);
  }
  nlohmann::json flows = nlohmann::json::array();
  bool recorded = false;
  {
    std::lock_guard lk(owned_mu);
    auto& o = owned[*id];
    for (const FlowKey& k : added) {
      o.flows.push_back(k);
      flows.push_back(k.to_string());
    }
    recorded = o.recorded;
  }
  if (recorded) save_state();
  return nlohmann::json{{"instance", *id}, {"flows", flows}};
}

Result<nlohmann::json> Server::Impl::op_detach(Conn& c, const nlohmann::json& m) {
  auto id = authorize(c, m);
  if (!id) return Error{id.error()};
  auto flow = field<std::string>(m, "flow", "");
  if (!flow) return Error{flow.error()};
  auto k = FlowKey::parse(*flow);
  if (!k) return Error{k.error()};
  bool recorded = false;
  {
    std::lock_guard lk(owned_mu);
    auto& o = owned[*id];
    auto it = std::find_if(o.flows.begin(), o.flows.end(),
                           [&](const FlowKey& f) { return f.to_string() == k->to_string(); });
    if (it == o.flows.end())
      return make_error("flow {} is not attached to instance {}", k->to_string(), *id);
    o.flows.erase(it);
    recorded = o.recorded;
  }
  if (recorded) save_state();
  if (auto r = engine.remove_flow(*k); !r) return Error{r.error()};
  return nlohmann::json{{"instance", *id}, {"flow", k->to_string()}};
}

// ---------------------------------------------------------------- captures

Result<nlohmann::json> Server::Impl::op_capture(Conn& c, const Request& r, int& fd) {
  const nlohmann::json& m = r.msg;
  auto id = authorize(c, m);
  if (!id) return Error{id.error()};
  if (fd < 0)
    return make_error(
        "capture needs a socket to write the pcapng to, passed with the request "
        "(gaonctl capture passes one)");
  int type = 0;
  socklen_t tl = sizeof(type);
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) != 0 || type != SOCK_STREAM)
    return make_error("capture: the descriptor passed must be a stream socket");
  CaptureOptions o;
  auto at = field<std::string>(m, "at", "in,out");
  if (!at) return Error{at.error()};
  if (*at == "in")
    o.out = false;
  else if (*at == "out")
    o.in = false;
  else if (*at != "in,out" && *at != "out,in")
    return make_error("\"at\" must be in, out or in,out, not '{}'", *at);
  auto count = field<uint64_t>(m, "count", 1000);
  auto seconds = field<uint64_t>(m, "seconds", 60);
  auto snaplen = field<uint64_t>(m, "snaplen", kFrameSize);
  if (!count) return Error{count.error()};
  if (!seconds) return Error{seconds.error()};
  if (!snaplen) return Error{snaplen.error()};
  if (*count < 1 || *count > 10'000'000) return make_error("\"count\" must be 1..10000000");
  if (*seconds < 1 || *seconds > 3600) return make_error("\"seconds\" must be 1..3600");
  if (*snaplen < 1 || *snaplen > kFrameSize)
    return make_error("\"snaplen\" must be 1..{}", kFrameSize);
  for (const auto& k : captures)
    if (k->instance == *id) return make_error("instance {}: already being captured", *id);
  o.count = *count;
  o.snaplen = uint32_t(*snaplen);
  auto k = std::make_unique<Cap>();
  k->instance = *id;
  k->conn = c.serial;
  k->conn_fd = c.fd;
  k->request = r.id;
  k->ring = std::make_unique<Capture>(o);
  const uint64_t mono = mono_ns();
  k->offset_ns = int64_t(clock_ns(CLOCK_REALTIME)) - int64_t(mono);
  k->deadline_ns = mono + *seconds * kSecondNs;
  k->buf = pcapng_header(*id, k->ring->options(), "gaond " GAON_VERSION);
  if (auto s = engine.set_capture(*id, k->ring.get()); !s) return Error{s.error()};
  k->out = fd;
  fd = -1;  // kept until the capture ends
  captures.push_back(std::move(k));
  return nlohmann::json(nullptr);
}

void Server::Impl::service_captures(bool stopping) {
  const uint64_t now = mono_ns();
  for (size_t i = 0; i < captures.size();) {
    Cap& k = *captures[i];
    auto drain = [&] {
      k.ring->drain(
          [&](const CaptureRecord& r) { pcapng_packet(k.buf, k.ring->options(), r, k.offset_ns); });
    };
    auto send_some = [&] {
      while (!k.buf.empty() && !k.failed) {
        const ssize_t n = send(k.out, k.buf.data(), k.buf.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
          if (errno != EAGAIN && errno != EWOULDBLOCK) k.failed = true;
          break;
        }
        k.buf.erase(0, size_t(n));
      }
    };
    if (k.buf.size() < (4u << 20)) drain();  // (else the ring fills: frames lost, counted)
    send_some();
    auto conn = conns.find(k.conn_fd);
    const bool asker = conn != conns.end() && conn->second.serial == k.conn;
    bool gone;
    {
      std::lock_guard lk(owned_mu);
      gone = owned.find(k.instance) == owned.end();
    }
    const bool done = (k.ring->full() && k.buf.empty()) || now >= k.deadline_ns || gone || !asker ||
                      k.failed || stopping;
    if (!done) {
      ++i;
      continue;
    }
    (void)engine.set_capture(k.instance, nullptr);  // the datapath lets go of the ring
    drain();
    pcapng_stats(k.buf, k.ring->options(), clock_ns(CLOCK_REALTIME), k.ring->taken(),
                 k.ring->lost());
    // What is left goes out within a second (a reader that stopped loses the rest).
    for (int turn = 0; turn < 100 && !k.buf.empty() && !k.failed; ++turn) {
      pollfd pf{k.out, POLLOUT, 0};
      if (poll(&pf, 1, 10) > 0) send_some();
    }
    close(k.out);
    if (asker) {
      const char* why = gone             ? "instance gone"
                        : k.failed       ? "the reader went away"
                        : stopping       ? "gaond stopping"
                        : k.ring->full() ? "count reached"
                                         : "time up";
      conn->second.out += frame(ok_reply(
          k.request, {{"frames", k.ring->taken()}, {"lost", k.ring->lost()}, {"ended", why}}));
      if (!stopping && !flush(conn->second)) drop(conn->first);
    }
    captures.erase(captures.begin() + long(i));
  }
}

}  // namespace gaon::control

#include "checker.h"

#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include <pthread.h>
#include <sched.h>

#include <fmt/format.h>

#include "frames.h"
#include "procs.h"

namespace gaon::test {

std::optional<std::string> tcp_ask(int fd, const std::string& cmd, size_t piece,
                                   std::chrono::microseconds pause) {
  for (size_t off = 0; off < cmd.size();) {
    const size_t n = piece ? std::min(piece, cmd.size() - off) : cmd.size() - off;
    if (send(fd, cmd.data() + off, n, MSG_NOSIGNAL) != ssize_t(n)) return std::nullopt;
    off += n;
    if (off < cmd.size()) std::this_thread::sleep_for(pause);
  }
  std::string line;
  char c;
  while (line.size() < 256) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 1000) <= 0 || recv(fd, &c, 1, 0) != 1) return std::nullopt;
    line += c;
    if (line.ends_with("\r\n")) return line;
  }
  return std::nullopt;
}

std::vector<Op> run_workload(const Workload& w) {
  std::mutex mu;
  std::vector<Op> all;
  std::vector<std::thread> threads;
  const auto until = std::chrono::steady_clock::now() + w.duration;
  auto make = [&](int type) {
    return w.make_socket ? w.make_socket(type) : socket(AF_INET, type | SOCK_CLOEXEC, 0);
  };
  for (int c = 0; c < w.clients; ++c) {
    threads.emplace_back([&, c] {
      if (w.pin_clients) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(unsigned(c) % std::thread::hardware_concurrency(), &set);
        pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
      }
      McUdp udp(make(SOCK_DGRAM), w.server);
      int tcp = -1;
      if (w.writes_over_tcp) {
        tcp = make(SOCK_STREAM);
        const int one = 1;
        setsockopt(tcp, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (connect(tcp, reinterpret_cast<const sockaddr*>(&w.server), sizeof(w.server)) != 0) {
          close(tcp);
          tcp = -1;
        }
      }
      std::mt19937 rng(1234 + c);
      std::vector<Op> mine;
      uint16_t id = 0;
      int seq = 0;
      while (std::chrono::steady_clock::now() < until) {
        Op op;
        const int r = int(rng() % 100);
        const int reads = 100 - w.write_percent;
        op.kind = r < reads ? Op::get : r < reads + w.write_percent * 3 / 4 ? Op::set : Op::del;
        op.key = int(rng() % w.keys);
        const std::string key = "hot" + std::to_string(op.key);
        std::string body;
        if (op.kind == Op::get) body = "get " + key + "\r\n";
        if (op.kind == Op::set) {
          op.value = "c" + std::to_string(c) + "-" + std::to_string(++seq);
          body =
              "set " + key + " 0 0 " + std::to_string(op.value.size()) + "\r\n" + op.value + "\r\n";
        }
        if (op.kind == Op::del) body = "delete " + key + "\r\n";
        op.start = std::chrono::steady_clock::now();
        std::optional<std::string> text;
        if (op.kind != Op::get && w.writes_over_tcp) {
          if (tcp < 0) break;
          text = tcp_ask(tcp, body, w.tcp_piece);
          if (!text) break;  // the connection's state is unknown now: stop this client
        } else {
          text = udp.reply_to(body, ++id, std::chrono::milliseconds(200));
          if (text) text = text->substr(8);
        }
        op.end = std::chrono::steady_clock::now();
        if (!text) continue;  // lost: unknown outcome, not recorded
        if (op.kind == Op::get) {
          if (text->rfind("VALUE ", 0) == 0) {
            const size_t a = text->find("\r\n") + 2;
            op.value = text->substr(a, text->find("\r\n", a) - a);
          } else if (*text != "END\r\n") {
            continue;
          }
        } else if (op.kind == Op::set && *text != "STORED\r\n") {
          continue;
        } else if (op.kind == Op::del && *text != "DELETED\r\n" && *text != "NOT_FOUND\r\n") {
          continue;
        }
        mine.push_back(op);
      }
      if (tcp >= 0) close(tcp);
      std::lock_guard lk(mu);
      all.insert(all.end(), mine.begin(), mine.end());
    });
  }
  for (auto& t : threads) t.join();
  return all;
}

size_t count_stale(const std::vector<Op>& ops) {
  using T = std::chrono::steady_clock::time_point;
  std::map<std::string, const Op*> writer;  // value -> its set
  // Per key: writes and deletes sorted by acknowledgement time, with the running maximum
  // of their start times, so "the latest start among writes acknowledged before t" is a
  // binary search.
  std::map<int, std::vector<std::pair<T, T>>> acked;  // (end, max start so far)
  T t0 = T::max();
  for (const Op& op : ops) {
    t0 = std::min(t0, op.start);
    if (op.kind == Op::set) writer[op.value] = &op;
    if (op.kind != Op::get) acked[op.key].push_back({op.end, op.start});
  }
  for (auto& [k, v] : acked) {
    std::sort(v.begin(), v.end());
    for (size_t i = 1; i < v.size(); ++i) v[i].second = std::max(v[i].second, v[i - 1].second);
  }
  size_t stale = 0;
  for (const Op& g : ops) {
    if (g.kind != Op::get || g.value.empty()) continue;
    auto w = writer.find(g.value);
    if (w == writer.end()) continue;  // written by a set whose ack was lost
    const auto& v = acked[g.key];
    auto it = std::lower_bound(v.begin(), v.end(), std::pair<T, T>{g.start, T::min()});
    if (it == v.begin()) continue;  // nothing acknowledged before the GET started
    if (std::prev(it)->second <= w->second->end) continue;
    // (The first few, for whoever reads a failure: when, in ms from the first op.)
    auto ms = [&](T t) { return std::chrono::duration<double, std::milli>(t - t0).count(); };
    if (++stale <= 5)
      fmt::print(stderr,
                 "stale: key {} get [{:.1f}, {:.1f}] returned the value set [{:.1f}, {:.1f}]; "
                 "a write of it that started at {:.1f} was acknowledged before the get\n",
                 g.key, ms(g.start), ms(g.end), ms(w->second->start), ms(w->second->end),
                 ms(std::prev(it)->second));
  }
  return stale;
}

}  // namespace gaon::test

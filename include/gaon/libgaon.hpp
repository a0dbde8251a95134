// libgaon for C++: RAII over the C API in libgaon.h. Errors throw gaon::ControlError
// (this is application code, not the datapath).
#pragma once

#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "gaon/libgaon.h"

namespace gaon {

struct ControlError : std::runtime_error {
  ControlError(int status, const std::string& what) : std::runtime_error(what), status(status) {}
  int status;
};

class Connection {
 public:
  explicit Connection(const char* path = nullptr) {
    if (gaon_connect(path, &c_) != GAON_OK)
      throw ControlError(GAON_E_CONNECT, std::string("cannot reach gaond at ") +
                                             (path ? path : "/run/gaon/gaond.sock"));
  }
  ~Connection() { gaon_disconnect(c_); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  gaon_conn* get() { return c_; }
  void check(int st) {
    if (st != GAON_OK) throw ControlError(st, gaon_last_error(c_));
  }

 private:
  gaon_conn* c_ = nullptr;
};

class IKernelInstance {
 public:
  IKernelInstance(Connection& c, const std::string& type, const std::vector<std::string>& params,
                  const gaon_ik_opts* opts = nullptr)
      : c_(c) {
    std::vector<const char*> p;
    for (const auto& s : params) p.push_back(s.c_str());
    c_.check(gaon_ik_create(c_.get(), type.c_str(), p.data(), p.size(), opts, &ik_));
  }
  ~IKernelInstance() {
    if (ik_) gaon_ik_destroy(ik_);
  }
  IKernelInstance(const IKernelInstance&) = delete;
  IKernelInstance& operator=(const IKernelInstance&) = delete;
  uint32_t id() const { return gaon_ik_id(ik_); }
  void attach(int sockfd) { c_.check(gaon_ik_attach(ik_, sockfd)); }
  void detach(const std::string& flow) { c_.check(gaon_ik_detach(ik_, flow.c_str())); }
  // The operation's JSON reply as text.
  std::string call(const std::string& op, const std::vector<std::string>& args = {}) {
    std::vector<const char*> a;
    for (const auto& s : args) a.push_back(s.c_str());
    char* out = nullptr;
    c_.check(gaon_ik_call(ik_, op.c_str(), a.data(), a.size(), &out));
    std::string r(out);
    gaon_free(out);
    return r;
  }

 private:
  Connection& c_;
  gaon_ik* ik_ = nullptr;
};

}  // namespace gaon

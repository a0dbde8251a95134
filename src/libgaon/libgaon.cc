// libgaon: the C API over the control protocol (gaon/control.h).
#include "gaon/libgaon.h"

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "gaon/control.h"

struct gaon_conn {
  gaon::control::Client client;
  std::string error;
};

struct gaon_ik {
  gaon_conn* conn;
  uint32_t id;
};

namespace {

thread_local std::string connect_error;  // gaon_connect has no connection to keep it on

int fail(gaon_conn* c, const std::string& why, int code) {
  if (c) c->error = why;
  return code;
}

int code_of(const gaon_conn* c) {
  const std::string& k = c->client.last_code();
  if (k.empty()) return GAON_E_PROTOCOL;
  if (k == "permission") return GAON_E_PERMISSION;
  if (k == "limit") return GAON_E_LIMIT;
  if (k == "conflict") return GAON_E_CONFLICT;
  return GAON_E_INVALID;
}

// One request; on failure records the reason and returns the status.
int request(gaon_conn* c, const char* op, nlohmann::json args, nlohmann::json* result,
            int fd = -1) {
  c->error.clear();
  auto r = c->client.call(op, std::move(args), fd);
  if (!r) return fail(c, r.error(), code_of(c));
  if (result) *result = std::move(*r);
  return GAON_OK;
}

std::vector<std::string> strings(const char* const* v, size_t n) {
  std::vector<std::string> out;
  for (size_t i = 0; i < n; ++i) out.emplace_back(v[i] ? v[i] : "");
  return out;
}

}  // namespace

extern "C" {

int gaon_connect(const char* path, gaon_conn** out) {
  if (out == nullptr) return GAON_E_INVALID;
  *out = nullptr;
  auto c = gaon::control::Client::connect(path ? path : gaon::control::kDefaultPath);
  if (!c) {
    connect_error = c.error();
    return GAON_E_CONNECT;
  }
  *out = new gaon_conn{std::move(*c), {}};
  return GAON_OK;
}

void gaon_disconnect(gaon_conn* c) { delete c; }

int gaon_fd(const gaon_conn* c) { return c ? c->client.fd() : -1; }

const char* gaon_last_error(const gaon_conn* c) {
  return c ? c->error.c_str() : connect_error.c_str();
}

int gaon_ik_create(gaon_conn* c, const char* type, const char* const* params, size_t nparams,
                   const gaon_ik_opts* opts, gaon_ik** out) {
  if (c == nullptr || out == nullptr) return GAON_E_INVALID;
  *out = nullptr;
  if (type == nullptr) return fail(c, "no ikernel type given", GAON_E_INVALID);
  nlohmann::json args = {{"type", type}, {"params", strings(params, nparams)}};
  if (opts) {
    if (opts->quota_bytes) args["quota"] = opts->quota_bytes;
    if (opts->weight) args["weight"] = opts->weight;
    if (opts->rate_bps) args["rate_bps"] = opts->rate_bps;
    args["persist"] = opts->persist != 0;
  }
  nlohmann::json r;
  if (int st = request(c, "create", args, &r); st != GAON_OK) return st;
  *out = new gaon_ik{c, r.value("instance", 0u)};
  return GAON_OK;
}

uint32_t gaon_ik_id(const gaon_ik* ik) { return ik ? ik->id : 0; }

int gaon_ik_attach(gaon_ik* ik, int sockfd) {
  if (ik == nullptr) return GAON_E_INVALID;
  if (sockfd < 0) return fail(ik->conn, "no socket given", GAON_E_INVALID);
  return request(ik->conn, "attach", {{"instance", ik->id}}, nullptr, sockfd);
}

int gaon_ik_detach(gaon_ik* ik, const char* flow) {
  if (ik == nullptr) return GAON_E_INVALID;
  if (flow == nullptr) return fail(ik->conn, "no flow given", GAON_E_INVALID);
  return request(ik->conn, "detach", {{"instance", ik->id}, {"flow", flow}}, nullptr);
}

int gaon_ik_call(gaon_ik* ik, const char* op, const char* const* args, size_t nargs,
                 char** reply_json) {
  if (ik == nullptr || op == nullptr) return GAON_E_INVALID;
  nlohmann::json r;
  const int st = request(ik->conn, "call",
                         {{"instance", ik->id}, {"name", op}, {"args", strings(args, nargs)}}, &r);
  if (st != GAON_OK) return st;
  if (reply_json) {
    const std::string text = r.dump();
    *reply_json = static_cast<char*>(std::malloc(text.size() + 1));
    if (*reply_json == nullptr) return fail(ik->conn, "out of memory", GAON_E_PROTOCOL);
    std::memcpy(*reply_json, text.c_str(), text.size() + 1);
  }
  return GAON_OK;
}

int gaon_ik_destroy(gaon_ik* ik) {
  if (ik == nullptr) return GAON_E_INVALID;
  const int st = request(ik->conn, "destroy", {{"instance", ik->id}}, nullptr);
  delete ik;
  return st;
}

void gaon_free(void* p) { std::free(p); }

}  // extern "C"

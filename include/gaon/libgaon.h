/* libgaon: attach an ikernel to your own socket.
 *
 *   gaon_conn* c;
 *   if (gaon_connect(NULL, &c) != GAON_OK) ...              // NULL: /run/gaon/gaond.sock
 *   const char* params[] = {"capacity=64M"};
 *   gaon_ik* ik;
 *   gaon_ik_create(c, "kvcache", params, 1, NULL, &ik);
 *   gaon_ik_attach(ik, sockfd);           // the socket itself: gaond reads its address
 *   char* json; gaon_ik_call(ik, "stats", NULL, 0, &json); ...; gaon_free(json);
 *   gaon_ik_destroy(ik); gaon_disconnect(c);
 *
 * Every call returns GAON_OK or a negative gaon_status; gaon_last_error() has the one-line
 * reason. Instances live as long as the connection unless created with opts.persist, so
 * a process that dies leaks nothing. Link with `pkg-config --libs gaon`.
 */
#ifndef GAON_LIBGAON_H
#define GAON_LIBGAON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GAON_EXPORT __attribute__((visibility("default")))

typedef enum gaon_status {
  GAON_OK = 0,
  GAON_E_CONNECT = -1,    /* gaond is not reachable */
  GAON_E_INVALID = -2,    /* bad argument: unknown type or op, bad parameter, bad socket */
  GAON_E_PERMISSION = -3, /* not yours (or no such instance), or needs root */
  GAON_E_LIMIT = -4,      /* a per-owner limit or the instance quota */
  GAON_E_CONFLICT = -5,   /* the flow is attached to another instance */
  GAON_E_PROTOCOL = -6    /* gaond answered something unexpected, or the connection broke */
} gaon_status;

typedef struct gaon_conn gaon_conn;
typedef struct gaon_ik gaon_ik;

typedef struct gaon_ik_opts {
  uint64_t quota_bytes; /* 0: gaond's default (64 MiB) */
  uint32_t weight;      /* share of the wire, 1..1000; 0: 1 */
  uint64_t rate_bps;    /* 0: no rate limit */
  int persist;          /* non-zero: outlive this connection */
} gaon_ik_opts;

GAON_EXPORT int gaon_connect(const char* path, gaon_conn** out);
GAON_EXPORT void gaon_disconnect(gaon_conn* c);
/* The control connection's descriptor, to watch with poll(): gaond never writes unasked,
 * so it turning readable (or hung up) while no call is running means gaond went away. */
GAON_EXPORT int gaon_fd(const gaon_conn* c);
/* The reason for the last failed call on `c` ("" if none), or with c == NULL for the last
 * failed gaon_connect of this thread; valid until the next call. */
GAON_EXPORT const char* gaon_last_error(const gaon_conn* c);

GAON_EXPORT int gaon_ik_create(gaon_conn* c, const char* type, const char* const* params,
                               size_t nparams, const gaon_ik_opts* opts, gaon_ik** out);
GAON_EXPORT uint32_t gaon_ik_id(const gaon_ik* ik);
GAON_EXPORT int gaon_ik_attach(gaon_ik* ik, int sockfd);
GAON_EXPORT int gaon_ik_detach(gaon_ik* ik, const char* flow);
/* Runs a state operation; on success *reply_json is a malloc'd JSON text (gaon_free it). */
GAON_EXPORT int gaon_ik_call(gaon_ik* ik, const char* op, const char* const* args, size_t nargs,
                             char** reply_json);
/* Destroys the instance and frees the handle (also on failure). */
GAON_EXPORT int gaon_ik_destroy(gaon_ik* ik);
GAON_EXPORT void gaon_free(void* p);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // GAON_LIBGAON_H

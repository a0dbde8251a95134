/* A CoAP server that checks no credentials itself: it binds its UDP socket, attaches gaon's
 * `auth` ikernel to it (framing=coap, JWT in option 65000) and gives the instance its key,
 * so only requests carrying a valid HS256 token ever reach it. It answers every request
 * with 2.05 Content "served N" (piggybacked on the ACK of a confirmable request) and logs
 * each one, so what got through is easy to count.
 *
 *   gaon-example-coap IP:PORT KEY_HEX [CONTROL_SOCKET]
 *
 * KEY_HEX is the HMAC key, 32 to 128 bytes in hex; "-" skips attaching (nothing checked).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gaon/libgaon.h"

static int parse_addr(const char* text, struct sockaddr_in* a) {
  char ip[64];
  const char* colon = strrchr(text, ':');
  if (colon == NULL || (size_t)(colon - text) >= sizeof(ip)) return -1;
  memcpy(ip, text, (size_t)(colon - text));
  ip[colon - text] = 0;
  const int port = atoi(colon + 1);
  memset(a, 0, sizeof(*a));
  a->sin_family = AF_INET;
  a->sin_port = htons((uint16_t)port);
  return port > 0 && port < 65536 && inet_pton(AF_INET, ip, &a->sin_addr) == 1 ? 0 : -1;
}

int main(int argc, char** argv) {
  struct sockaddr_in a;
  if (argc < 3 || parse_addr(argv[1], &a) != 0) {
    fprintf(stderr, "usage: %s IP:PORT KEY_HEX|- [CONTROL_SOCKET]\n", argv[0]);
    return 2;
  }
  const int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (bind(fd, (struct sockaddr*)&a, sizeof(a)) != 0) {
    perror("coap: bind");
    return 1;
  }
  if (strcmp(argv[2], "-") != 0) {
    gaon_conn* c = NULL;
    gaon_ik* ik = NULL;
    const char* params[] = {"framing=coap"};
    const char* key[] = {argv[2]};
    char* reply = NULL;
    if (gaon_connect(argc > 3 ? argv[3] : NULL, &c) != GAON_OK ||
        gaon_ik_create(c, "auth", params, 1, NULL, &ik) != GAON_OK ||
        gaon_ik_call(ik, "set_key", key, 1, &reply) != GAON_OK ||
        gaon_ik_attach(ik, fd) != GAON_OK) {
      fprintf(stderr, "coap: cannot attach auth: %s\n", gaon_last_error(c));
      return 1;
    }
    gaon_free(reply);
    printf("coap: auth instance %u checks every request to %s\n", gaon_ik_id(ik), argv[1]);
    fflush(stdout);
  }
  unsigned char buf[2048], out[64];
  unsigned long served = 0;
  for (;;) {
    struct sockaddr_in from;
    socklen_t len = sizeof(from);
    const ssize_t n = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr*)&from, &len);
    if (n < 0) break;
    if (n < 4 || (buf[0] >> 6) != 1 || (buf[1] >> 5) != 0 || buf[1] == 0) continue;
    const size_t tkl = buf[0] & 0xf;
    if (tkl > 8 || 4 + tkl > (size_t)n) continue;
    const unsigned type = (buf[0] >> 4) & 3; /* CON 0 -> ACK 2; NON 1 -> NON 1 */
    out[0] = (unsigned char)(0x40 | (type == 0 ? 2 : 1) << 4 | tkl);
    out[1] = 0x45; /* 2.05 Content */
    out[2] = buf[2];
    out[3] = buf[3];
    memcpy(out + 4, buf + 4, tkl);
    ++served;
    const int m = snprintf((char*)out + 5 + tkl, sizeof(out) - 5 - tkl, "served %lu", served);
    out[4 + tkl] = 0xff;
    /* Logged before the reply goes out: a client that stops us on seeing the reply must
     * find the line already written. */
    printf("coap: served %lu\n", served);
    fflush(stdout);
    sendto(fd, out, 5 + tkl + (size_t)m, 0, (struct sockaddr*)&from, len);
  }
  return 0;
}

/* A UDP echo server that offloads itself: it binds its socket, then attaches gaon's `echo`
 * ikernel to it, so gaond answers on the wire and datagrams never reach this process.
 * If gaond is not there it says so and echoes by itself (fail-open).
 *
 *   gaon-example-echo PORT [CONTROL_SOCKET]
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gaon/libgaon.h"

int main(int argc, char** argv) {
  if (argc < 2 || atoi(argv[1]) <= 0 || atoi(argv[1]) > 65535) {
    fprintf(stderr, "usage: %s PORT [CONTROL_SOCKET]\n", argv[0]);
    return 2;
  }
  const int fd = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons((uint16_t)atoi(argv[1]));
  if (bind(fd, (struct sockaddr*)&a, sizeof(a)) != 0) {
    perror("bind");
    return 1;
  }
  gaon_conn* c = NULL;
  gaon_ik* ik = NULL;
  if (gaon_connect(argc > 2 ? argv[2] : NULL, &c) != GAON_OK) {
    fprintf(stderr, "echo: %s; echoing by myself\n", gaon_last_error(NULL));
  } else if (gaon_ik_create(c, "echo", NULL, 0, NULL, &ik) != GAON_OK ||
             gaon_ik_attach(ik, fd) != GAON_OK) {
    fprintf(stderr, "echo: %s; echoing by myself\n", gaon_last_error(c));
  } else {
    printf("echo: gaon instance %u answers for udp port %s\n", gaon_ik_id(ik), argv[1]);
    fflush(stdout);
  }
  char buf[2048];
  unsigned long served = 0;
  for (;;) {
    struct sockaddr_in from;
    socklen_t len = sizeof(from);
    const ssize_t n = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr*)&from, &len);
    if (n < 0) break;
    sendto(fd, buf, (size_t)n, 0, (struct sockaddr*)&from, len);
    printf("echo: answered %lu datagram(s) myself\n", ++served);
    fflush(stdout);
  }
  return 0;
}

/* Creates a kvcache instance, attaches it to a UDP socket this program binds (as memcached
 * would), and prints the instance's stats as JSON.
 *
 *   gaon-example-kvcache-stats IP PORT [CONTROL_SOCKET]
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gaon/libgaon.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s IP PORT [CONTROL_SOCKET]\n", argv[0]);
    return 2;
  }
  const int fd = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)atoi(argv[2]));
  if (inet_pton(AF_INET, argv[1], &a.sin_addr) != 1 ||
      bind(fd, (struct sockaddr*)&a, sizeof(a)) != 0) {
    fprintf(stderr, "kvcache-stats: cannot bind %s:%s\n", argv[1], argv[2]);
    return 1;
  }
  gaon_conn* c;
  if (gaon_connect(argc > 3 ? argv[3] : NULL, &c) != GAON_OK) {
    fprintf(stderr, "kvcache-stats: %s\n", gaon_last_error(NULL));
    return 1;
  }
  const char* params[] = {"capacity=16M", "max_value=1000"};
  gaon_ik* ik;
  char* stats = NULL;
  if (gaon_ik_create(c, "kvcache", params, 2, NULL, &ik) != GAON_OK ||
      gaon_ik_attach(ik, fd) != GAON_OK || gaon_ik_call(ik, "stats", NULL, 0, &stats) != GAON_OK) {
    fprintf(stderr, "kvcache-stats: %s\n", gaon_last_error(c));
    gaon_disconnect(c);
    return 1;
  }
  printf("instance %u: %s\n", gaon_ik_id(ik), stats);
  gaon_free(stats);
  gaon_ik_destroy(ik);
  gaon_disconnect(c);
  return 0;
}

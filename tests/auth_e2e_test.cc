// auth end to end in sidecar mode: an unmodified-style CoAP server (examples/coap_server.c,
// which checks nothing) attaches auth to its own socket through libgaon; clients talk to
// gaond's address. Valid requests are answered; forged ones never reach the server.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ctime>

#include "procs.h"
#include "tokens.h"

using namespace std::chrono_literals;

namespace gaon {
namespace {

using namespace test;

const std::vector<uint8_t> kKey = test::unhex(std::string(64, '7'));

std::string request(uint16_t mid, const std::string& jwt) {
  std::vector<std::pair<uint32_t, std::string>> opts = {{11, "temperature"}};
  if (!jwt.empty()) opts.push_back({65000, jwt});
  return test::coap_msg(0, 1, mid, "t" + std::to_string(mid % 10), opts);
}

TEST(AuthSidecar, ForgedRequestsNeverReachTheServer) {
  const uint16_t port = free_port(), app = free_port();
  const std::string sock = "/tmp/gaond-auth-" + std::to_string(getpid()) + ".sock";
  Child d = start_sidecar_gaond(port, app, sock);
  ASSERT_TRUE(d.wait_errors("ready")) << d.errors();
  Child srv = Child::start({std::string(GAON_BIN_DIR) + "/gaon-example-coap",
                            "127.0.0.1:" + std::to_string(app), test::hex(kKey), sock});
  ASSERT_TRUE(srv.wait_output("checks every request")) << srv.errors();

  const int fd = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const std::string exp = std::to_string(time(nullptr) + 300);
  const std::string hs256 = R"({"alg":"HS256","typ":"JWT"})";
  const std::string valid = test::make_jwt(hs256, R"({"sub":"dev1","exp":)" + exp + "}", kKey);
  // Answered: 2.05 Content, piggybacked on the ACK, the server's count in the payload.
  auto r = udp_ask(fd, to, request(1, valid), 2000ms);
  ASSERT_TRUE(r);
  EXPECT_EQ(uint8_t((*r)[1]), 0x45);
  EXPECT_NE(r->find("served 1"), std::string::npos);
  const std::vector<std::pair<std::string, std::string>> forged = {
      {"no token", ""},
      {"another key",
       test::make_jwt(hs256, R"({"exp":)" + exp + "}", test::unhex(std::string(64, '8')))},
      {"alg none",
       test::b64url(R"({"alg":"none"})") + "." + test::b64url(R"({"exp":)" + exp + "}") + "."},
      {"expired", test::make_jwt(hs256, R"({"exp":1000})", kKey)},
      {"garbage", "not.a.jwt"},
  };
  uint16_t mid = 10;
  for (const auto& [what, jwt] : forged)
    EXPECT_FALSE(udp_ask(fd, to, request(mid++, jwt), 300ms)) << what;
  EXPECT_FALSE(udp_ask(fd, to, "\x40\x01", 300ms));  // not even CoAP
  r = udp_ask(fd, to, request(mid++, valid), 2000ms);
  ASSERT_TRUE(r);
  EXPECT_NE(r->find("served 2"), std::string::npos);  // the forged ones were never counted
  close(fd);
  srv.stop();
  const std::string out = srv.output();
  EXPECT_NE(out.find("coap: served 2"), std::string::npos) << out;
  EXPECT_EQ(out.find("coap: served 3"), std::string::npos) << out;
  EXPECT_EQ(d.stop(), 0);
}

}  // namespace
}  // namespace gaon

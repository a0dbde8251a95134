// gaond's state file: what it records, and that a bad file is one clear line, never a
// crash or a half-read state.
#include "state_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

namespace gaon::control {
namespace {

using nlohmann::json;

std::vector<SavedInstance> sample() {
  SavedInstance a{.id = 3,
                  .type = "kvcache",
                  .owner = 1000,
                  .params = {"capacity=1M", "max_ttl=60"},
                  .quota = 8u << 20,
                  .bytes = 1234567,
                  .tc = {.weight = 7, .rate_bps = 2000000, .burst_bytes = 9000}};
  a.flows = {*FlowKey::parse("udp:127.0.0.1:11211"),
             *FlowKey::parse("udp:10.0.0.1:53,10.0.0.2:4000"), *FlowKey::parse("tcp:[::1]:80")};
  SavedInstance b{.id = 9, .type = "echo", .owner = 65534, .quota = 64u << 20, .bytes = 16};
  return {a, b};
}

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/gaon-state-test-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

void write_file(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void expect_one_line(const std::string& e) { EXPECT_EQ(e.find('\n'), std::string::npos) << e; }

TEST(StateFile, RoundTripsEverythingItRecords) {
  const auto in = sample();
  const std::string text = encode_state(in);
  const json doc = json::parse(text);
  EXPECT_EQ(doc["format"], "gaond-state");
  EXPECT_EQ(doc["version"], 1);
  EXPECT_EQ(doc["instances"][0]["flows"][1], "udp:10.0.0.1:53,10.0.0.2:4000");
  auto out = decode_state(text, Registry::global());
  ASSERT_TRUE(out) << out.error();
  EXPECT_TRUE(*out == in) << encode_state(*out);
  auto empty = decode_state(encode_state({}), Registry::global());
  ASSERT_TRUE(empty) << empty.error();
  EXPECT_TRUE(empty->empty());
}

TEST(StateFile, SavesAtomicallyPrivatelyAndLoadsBack) {
  TempDir tmp;
  const std::string dir = tmp.path() + "/state";  // missing: created 0700
  auto sf = StateFile::open(dir);
  ASSERT_TRUE(sf) << sf.error();
  EXPECT_EQ(sf->path(), dir + "/state.json");
  struct stat st {};
  ASSERT_EQ(stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  auto none = sf->load(Registry::global());  // no file yet: nothing, no error
  ASSERT_TRUE(none) << none.error();
  EXPECT_TRUE(none->empty());
  const mode_t old = umask(0);  // the file is 0600 whatever the umask
  auto saved = sf->save(sample());
  umask(old);
  ASSERT_TRUE(saved) << saved.error();
  ASSERT_EQ(stat(sf->path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto back = sf->load(Registry::global());
  ASSERT_TRUE(back) << back.error();
  EXPECT_TRUE(*back == sample()) << encode_state(*back);
  ASSERT_TRUE(sf->save({sample()[1]}));
  EXPECT_EQ(sf->load(Registry::global())->size(), 1u);
  // Only the file is left in the directory (no temporary).
  size_t entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    ++entries;
    EXPECT_EQ(e.path().filename(), "state.json");
  }
  EXPECT_EQ(entries, 1u);
  // One gaond per directory.
  auto second = StateFile::open(dir + "/");
  ASSERT_FALSE(second);
  EXPECT_NE(second.error().find("another gaond"), std::string::npos) << second.error();
  sf = Result<StateFile>(make_error("closed"));  // unlocks
  EXPECT_TRUE(StateFile::open(dir));
}

TEST(StateFile, ADirectoryItCannotMakeIsAOneLineError) {
  TempDir tmp;
  write_file(tmp.path() + "/file", "x");
  auto sf = StateFile::open(tmp.path() + "/file/state");
  ASSERT_FALSE(sf);
  EXPECT_NE(sf.error().find(tmp.path() + "/file/state"), std::string::npos) << sf.error();
  expect_one_line(sf.error());
}

TEST(StateFile, ATruncatedFileIsOneLineNamingItAndIsMovedAside) {
  TempDir tmp;
  auto sf = StateFile::open(tmp.path());
  ASSERT_TRUE(sf) << sf.error();
  const std::string text = encode_state(sample());
  for (size_t cut : {size_t(0), size_t(1), text.size() / 2, text.size() - 3}) {
    write_file(sf->path(), text.substr(0, cut));
    auto r = sf->load(Registry::global());
    ASSERT_FALSE(r) << cut;
    EXPECT_NE(r.error().find("state file " + sf->path() + ": "), std::string::npos) << r.error();
    EXPECT_NE(r.error().find("not valid JSON"), std::string::npos) << r.error();
    EXPECT_NE(r.error().find("moved to " + sf->path() + ".bad"), std::string::npos) << r.error();
    expect_one_line(r.error());
    EXPECT_EQ(read_file(sf->path() + ".bad"), text.substr(0, cut));  // kept for a look
    auto again = sf->load(Registry::global());  // gone from the way: a fresh start
    ASSERT_TRUE(again) << again.error();
    EXPECT_TRUE(again->empty());
  }
}

TEST(StateFile, AFileItCannotReadIsMovedAsideToo) {
  TempDir tmp;
  auto sf = StateFile::open(tmp.path());
  ASSERT_TRUE(sf) << sf.error();
  ASSERT_EQ(mkdir(sf->path().c_str(), 0700), 0);  // a directory where the file should be
  auto r = sf->load(Registry::global());
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().find("state file " + sf->path()), std::string::npos) << r.error();
  EXPECT_NE(r.error().find("moved to"), std::string::npos) << r.error();
  expect_one_line(r.error());
  EXPECT_TRUE(sf->save(sample()));
  EXPECT_EQ(sf->load(Registry::global())->size(), 2u);
}

// Decoding errors, file by file: each is one line saying what is wrong.
void expect_rejected(const std::string& text, const std::string& want) {
  auto r = decode_state(text, Registry::global());
  ASSERT_FALSE(r) << text;
  EXPECT_NE(r.error().find(want), std::string::npos) << want << " <- " << r.error();
  expect_one_line(r.error());
}

TEST(StateFile, ForeignJsonIsNotTakenForOurs) {
  expect_rejected("[1, 2, 3]", "not a gaond state file");
  expect_rejected(R"({"instances": []})", "not a gaond state file");
  expect_rejected(R"({"format": "something-else", "version": 1, "instances": []})",
                  "not a gaond state file");
  expect_rejected(R"({"format": "gaond-state", "instances": []})", "no \"version\"");
  expect_rejected(R"({"format": "gaond-state", "version": 2, "instances": []})", "version 2");
  expect_rejected(R"({"format": "gaond-state", "version": 1})", "no \"instances\"");
  expect_rejected(R"({"format": "gaond-state", "version": 1, "instances": {}})",
                  "no \"instances\"");
  expect_rejected(R"({"format": "gaond-state", "version": 1, "instances": [7]})",
                  "instance #1: not a JSON object");
  expect_rejected("\x01\xff garbage", "not valid JSON");
}

TEST(StateFile, AnUnknownTypeOrABadFlowRejectsTheFile) {
  json doc = json::parse(encode_state(sample()));
  doc["instances"][1]["type"] = "nope";
  expect_rejected(doc.dump(), "instance 9: unknown ikernel type 'nope'");
  doc = json::parse(encode_state(sample()));
  doc["instances"][0]["flows"][1] = "udp:1.2.3";
  expect_rejected(doc.dump(), "instance 3: bad flow 'udp:1.2.3'");
  doc = json::parse(encode_state(sample()));
  doc["instances"][0]["traffic_class"]["weight"] = 0;
  expect_rejected(doc.dump(), "\"weight\" must be 1..1000");
  doc = json::parse(encode_state(sample()));
  doc["instances"][0]["owner"] = -1;
  expect_rejected(doc.dump(), "\"owner\" must be an integer");
  doc = json::parse(encode_state(sample()));
  doc["instances"][0]["params"] = {"capacity=1M", 5};
  expect_rejected(doc.dump(), "\"params\" must be a list of strings");
}

TEST(StateFile, MissingFieldsAreNamed) {
  const json good = json::parse(encode_state(sample()));
  for (const char* f :
       {"id", "type", "owner", "params", "quota", "bytes", "traffic_class", "flows"}) {
    json doc = good;
    doc["instances"][0].erase(f);
    expect_rejected(doc.dump(), fmt::format("\"{}\"", f));
  }
  for (const char* f : {"weight", "rate_bps", "burst_bytes"}) {
    json doc = good;
    doc["instances"][1]["traffic_class"].erase(f);
    expect_rejected(doc.dump(), fmt::format("instance 9 traffic_class: no \"{}\"", f));
  }
}

}  // namespace
}  // namespace gaon::control

// The documentation a user gets with the repository: every link in README.md and docs/
// (Markdown links, and the repository paths the text names in backquotes, such as
// `src/ikernels/kvcache/kv_abi.h`) resolves inside the checkout, and nothing points outside
// it (`../`, the design notes beside the repository that a clone does not have).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

const fs::path kRoot = GAON_SOURCE_DIR;

std::vector<fs::path> documents() {
  std::vector<fs::path> out = {kRoot / "README.md"};
  for (const auto& e : fs::directory_iterator(kRoot / "docs"))
    if (e.path().extension() == ".md") out.push_back(e.path());
  return out;
}

// A reference as written, without an anchor, a line number or trailing punctuation.
std::string bare(std::string t) {
  if (auto h = t.find('#'); h != std::string::npos) t.resize(h);
  while (!t.empty() && std::string(".,:;").find(t.back()) != std::string::npos) t.pop_back();
  static const std::regex line_no(":[0-9]+(-[0-9]+)?$");
  return std::regex_replace(t, line_no, "");
}

std::string at(const fs::path& doc, int line, const std::string& t) {
  return fs::relative(doc, kRoot).string() + ":" + std::to_string(line) + ": `" + t + "`";
}

bool names_repository_path(const std::string& t) {
  static const char* tops[] = {"src/",   "docs/",  "tests/", "scripts/", "include/",
                               "tools/", "bench/", "cmake/", "fuzz/",    ".ci/"};
  if (t.find_first_of("*{}<>$ ") != std::string::npos) return false;  // a pattern, not a path
  for (const char* p : tops)
    if (t.rfind(p, 0) == 0) return true;
  return false;
}

TEST(Docs, EveryLinkResolvesInsideTheRepository) {
  static const std::regex ref("`([^`\\s]+)`|\\]\\(([^)\\s]+)\\)");
  size_t checked = 0;
  for (const fs::path& doc : documents()) {
    std::ifstream in(doc);
    ASSERT_TRUE(in) << doc;
    std::string line;
    for (int n = 1; std::getline(in, line); ++n) {
      for (std::sregex_iterator m(line.begin(), line.end(), ref), e; m != e; ++m) {
        const bool link = (*m)[2].matched;
        const std::string t = bare(link ? (*m)[2].str() : (*m)[1].str());
        const std::string where = at(doc, n, t);
        if (link && t.rfind("http", 0) == 0) continue;  // (a web page: not the checkout's)
        EXPECT_EQ(t.find("../"), std::string::npos) << where << ": points outside the checkout";
        EXPECT_NE(t.rfind("shared/design", 0), 0u)
            << where << ": the design notes are not in a clone";
        if (link) {
          ++checked;
          EXPECT_TRUE(fs::exists(doc.parent_path() / t)) << where << ": no such file";
        } else if (names_repository_path(t)) {
          ++checked;
          EXPECT_TRUE(fs::exists(kRoot / t)) << where << ": no such file";
        }
      }
    }
  }
  EXPECT_GT(checked, 50u) << "the check finds the references it is meant to";
}

}  // namespace

// eval/domains.h: the per-domain train / eval split (FNV-1a of the relative path, written out
// again here), text-only files, suffix / prefix selection, the held-out rule and the mixture.
#include "eval/domains.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "core/error.h"

namespace indexshare::eval {
namespace {

namespace fs = std::filesystem;

// 64-bit FNV-1a with the split's offset basis 1469598103934665603 (eval/corpus.h), written out
// independently of the code under test.
uint64_t fnv(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

void write(const fs::path& p, const std::string& body) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << body;
}

struct Tree {
  fs::path root = fs::path(::testing::TempDir()) / "domains_test";
  Tree() {
    fs::remove_all(root);
    // (appends, not "literal" + std::string: GCC 12 warns falsely of -Wrestrict on that.)
    for (int i = 0; i < 40; ++i) {
      std::string dir = "sub", file = "f", body = "file ";
      dir += std::to_string(i % 3);
      file += std::to_string(i);
      file += ".conf";
      body += std::to_string(i);
      body += "\n";
      write(root / dir / file, body);
    }
    write(root / "README.md", "a readme\n");
    write(root / "notes.txt.gz", "compressed");
    write(root / "bin.conf", std::string("bin\0ary", 7));
    write(root / "skip.other", "not selected\n");
  }
  ~Tree() { fs::remove_all(root); }
  DomainSpec spec(bool held_out = false) const {
    return {"t", "test", {root.string()}, {".conf"}, {"README"}, true, held_out};
  }
};

TEST(Domains, SplitIsTheHashOfTheRelativePath) {
  Tree t;
  std::set<std::string> want_eval, want_train;
  for (int i = 0; i < 40; ++i) {
    const std::string rel = "sub" + std::to_string(i % 3) + "/f" + std::to_string(i) + ".conf";
    (fnv(rel) % 4 == 0 ? want_eval : want_train).insert(rel);
  }
  (fnv("README.md") % 4 == 0 ? want_eval : want_train).insert("README.md");
  ASSERT_FALSE(want_eval.empty());
  const Corpus e = load_domain(t.spec(), CorpusSplit::kEval), tr = load_domain(t.spec(), CorpusSplit::kTrain);
  EXPECT_EQ(std::set<std::string>(e.files.begin(), e.files.end()), want_eval);
  EXPECT_EQ(std::set<std::string>(tr.files.begin(), tr.files.end()), want_train);
  EXPECT_TRUE(std::is_sorted(tr.files.begin(), tr.files.end()));
  const Corpus all = load_domain(t.spec(), CorpusSplit::kAll);
  EXPECT_EQ(all.files.size(), want_eval.size() + want_train.size()) << "no .gz, no binary, no other suffix";
  EXPECT_EQ(all.text.find("compressed"), std::string::npos);
  EXPECT_EQ(all.text.find("not selected"), std::string::npos);
  EXPECT_EQ(all.root, "domain t");
}

TEST(Domains, MixtureInterleavesAndHeldOutIsNeverTrainingText) {
  Tree t;
  DomainSpec a = t.spec(), b = t.spec();
  b.name = "u";
  const Corpus m = load_mixture({a, b}, CorpusSplit::kTrain, 0, 10);
  const Corpus one = load_domain(a, CorpusSplit::kTrain);
  ASSERT_EQ(m.text.size(), 2 * one.text.size());
  // Blocks of 10 bytes alternate between the two (identical) domains.
  EXPECT_EQ(m.text.substr(0, 10), one.text.substr(0, 10));
  EXPECT_EQ(m.text.substr(10, 10), one.text.substr(0, 10));
  EXPECT_EQ(m.text.substr(20, 10), one.text.substr(10, 10));
  try {
    load_mixture({a, t.spec(true)}, CorpusSplit::kTrain, 0);
    FAIL() << "a held-out domain was mixed into training text";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("held out"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(load_mixture({t.spec(true)}, CorpusSplit::kEval, 0));
}

TEST(Domains, BuiltinsAndErrors) {
  const auto d = builtin_domains();
  std::set<std::string> names;
  int held = 0;
  for (const auto& s : d) names.insert(s.name), held += s.held_out;
  EXPECT_EQ(names, (std::set<std::string>{"python", "c", "cmake", "prose", "config", "perl"}));
  EXPECT_EQ(held, 1);
  EXPECT_TRUE(find_domain("perl").held_out);
  try {
    find_domain("cobol");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown domain 'cobol'; domains: python, c"), std::string::npos) << e.what();
  }
  DomainSpec none{"none", "nothing", {"/nonexistent/dir"}, {".x"}, {}, true};
  EXPECT_THROW(load_domain(none, CorpusSplit::kEval), Error);
}

// distill / search text: --corpus or --domains, never a held-out domain; "all" leaves perl out.
TEST(Domains, TrainingText) {
  EXPECT_THROW(load_training_text("/usr/lib", "c", 1000), Error);
  try {
    load_training_text("", "python,perl", 1000);
    FAIL() << "held-out domain accepted as training text";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("domain perl is held out"), std::string::npos) << e.what();
  }
  const Corpus all = load_training_text("", "all", 400000);
  EXPECT_EQ(all.root, "domains python+c+cmake+prose+config");
  for (const auto& f : all.files) EXPECT_NE(f.rfind("perl:", 0), 0u) << f;
  EXPECT_EQ(all.split, CorpusSplit::kTrain);
}

}  // namespace
}  // namespace indexshare::eval

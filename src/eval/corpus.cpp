#include "eval/corpus.h"

#include <fmt/core.h>

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "core/error.h"
#include "io/mapped_file.h"

namespace indexshare::eval {

namespace fs = std::filesystem;

uint64_t fnv1a64(const void* data, size_t n, uint64_t h) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

std::string Corpus::description() const {
  const char* s = split == CorpusSplit::kTrain ? "train" : split == CorpusSplit::kEval ? "eval" : "all";
  return fmt::format("{} ({} split, {} files, {:.2f} MB)", root, s, files.size(), text.size() / 1e6);
}

std::string default_corpus_dir() {
  std::vector<std::pair<int, std::string>> found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/usr/lib", ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("python3.", 0) != 0) continue;
    if (!fs::exists(e.path() / "os.py")) continue;
    try {
      found.emplace_back(std::stoi(name.substr(8)), e.path().string());
    } catch (...) {
    }
  }
  IS_CHECK(!found.empty(), "no Python standard library found under /usr/lib/python3.*; install Debian's python3 "
                           "(scripts/setup.sh does) or pass --corpus DIR");
  std::sort(found.begin(), found.end());
  return found.back().second;
}

Corpus load_corpus(const std::string& dir, CorpusSplit split, int64_t max_bytes) {
  Corpus c;
  c.root = dir;
  c.split = split;
  std::error_code ec;
  IS_CHECK(fs::exists(dir, ec), dir, ": corpus path does not exist");
  std::vector<std::string> names;
  if (fs::is_regular_file(dir, ec)) {
    names.push_back(fs::path(dir).filename().string());
    c.root = fs::path(dir).parent_path().string();
  } else {
    for (const auto& e : fs::directory_iterator(dir, ec))
      if (e.is_regular_file() && e.path().extension() == ".py") names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
  }
  for (const std::string& n : names) {
    const bool is_eval = fnv1a64(n.data(), n.size()) % 4 == 0;
    if (fs::is_regular_file(dir, ec)) {
      // A single file is used whole, whatever the split.
    } else if ((split == CorpusSplit::kEval && !is_eval) || (split == CorpusSplit::kTrain && is_eval)) {
      continue;
    }
    std::string body;
    try {
      body = io::read_text_file((fs::path(c.root) / n).string());
    } catch (const Error&) {
      continue;  // unreadable files are skipped; an empty corpus is an error below
    }
    if (body.empty()) continue;
    if (!c.text.empty()) c.text += "\n\n";
    c.text += body;
    c.files.push_back(n);
    if (max_bytes > 0 && static_cast<int64_t>(c.text.size()) >= max_bytes) break;
  }
  IS_CHECK(!c.text.empty(), dir, ": no readable text in the corpus (", split == CorpusSplit::kEval ? "eval" : split == CorpusSplit::kTrain ? "train" : "all",
           " split; looked for *.py files)");
  return c;
}

}  // namespace indexshare::eval

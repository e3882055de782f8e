#include "eval/domains.h"

#include <fmt/core.h>

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "core/error.h"
#include "io/mapped_file.h"

namespace indexshare::eval {
namespace {

namespace fs = std::filesystem;

// The newest child of `parent` whose name starts with `prefix` and that holds `sub` ("" if none).
std::string newest(const std::string& parent, const std::string& prefix, const std::string& sub) {
  std::vector<std::string> found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(parent, ec)) {
    const std::string n = e.path().filename().string();
    if (n.rfind(prefix, 0) == 0 && fs::is_directory(e.path() / sub, ec)) found.push_back((e.path() / sub).string());
  }
  std::sort(found.begin(), found.end());
  return found.empty() ? "" : found.back();
}

std::string python_dir() {
  try {
    return default_corpus_dir();
  } catch (const Error&) {
    return "/usr/lib/python3";
  }
}

bool wanted(const DomainSpec& d, const std::string& name) {
  if (name.size() > 3 && name.compare(name.size() - 3, 3, ".gz") == 0) return false;
  for (const auto& p : d.prefixes)
    if (name.rfind(p, 0) == 0) return true;
  for (const auto& s : d.suffixes)
    if (s.empty() || (name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0)) return true;
  return false;
}

}  // namespace

std::vector<DomainSpec> builtin_domains() {
  std::string perl = newest("/usr/lib", "", "perl-base");
  return {
      {"python", "Python standard library sources", {python_dir()}, {".py"}, {}, false},
      {"c", "C headers of /usr/include", {"/usr/include"}, {".h"}, {}, true},
      {"cmake", "CMake modules", {newest("/usr/share", "cmake-", "Modules")}, {".cmake"}, {}, true},
      {"prose", "licences and README / .txt documentation", {"/usr/share/common-licenses", "/usr/share/doc"},
       {".txt"}, {"README"}, true},
      {"config", "configuration files of /etc", {"/etc"}, {".conf"}, {}, true},
      {"perl", "Perl modules of perl-base", {perl.empty() ? "/usr/lib/x86_64-linux-gnu/perl-base" : perl}, {".pm"}, {},
       true, true},
  };
}

DomainSpec find_domain(const std::string& name) {
  std::string names;
  for (auto& d : builtin_domains()) {
    if (d.name == name) return d;
    names += (names.empty() ? "" : ", ") + d.name;
  }
  fail("unknown domain '", name, "'; domains: ", names);
}

Corpus load_domain(const DomainSpec& d, CorpusSplit split, int64_t max_bytes) {
  Corpus c;
  c.root = "domain " + d.name;
  c.split = split;
  // (root index, relative path): the split hashes the path relative to its root; "common-licenses"
  // files have no suffix, so that root takes every file.
  std::vector<std::pair<size_t, std::string>> names;
  std::error_code ec;
  for (size_t r = 0; r < d.roots.size(); ++r) {
    const fs::path root = d.roots[r];
    if (!fs::is_directory(root, ec)) continue;
    const bool all = root.filename() == "common-licenses";
    auto consider = [&](const fs::directory_entry& e) {
      std::error_code ec2;
      if (!e.is_regular_file(ec2) || e.is_symlink(ec2)) return;
      const std::string fname = e.path().filename().string();
      if (!all && !wanted(d, fname)) return;
      names.emplace_back(r, fs::relative(e.path(), root, ec2).string());
    };
    if (d.recursive) {
      for (auto it = fs::recursive_directory_iterator(root, fs::directory_options::skip_permission_denied, ec);
           it != fs::recursive_directory_iterator(); it.increment(ec)) {
        if (ec) break;
        consider(*it);
      }
    } else {
      for (const auto& e : fs::directory_iterator(root, ec)) consider(e);
    }
  }
  std::sort(names.begin(), names.end());
  for (const auto& [r, rel] : names) {
    const bool is_eval = fnv1a64(rel.data(), rel.size()) % 4 == 0;
    if ((split == CorpusSplit::kEval && !is_eval) || (split == CorpusSplit::kTrain && is_eval)) continue;
    std::string body;
    try {
      body = io::read_text_file((fs::path(d.roots[r]) / rel).string());
    } catch (const Error&) {
      continue;
    }
    // Text only: a NUL byte marks a binary file.
    if (body.empty() || body.find('\0') != std::string::npos) continue;
    if (!c.text.empty()) c.text += "\n\n";
    c.text += body;
    c.files.push_back(rel);
    if (max_bytes > 0 && static_cast<int64_t>(c.text.size()) >= max_bytes) break;
  }
  std::string roots;
  for (const auto& r : d.roots) roots += (roots.empty() ? "" : ", ") + r;
  IS_CHECK(!c.text.empty(), "domain ", d.name, ": no readable text in the ",
           split == CorpusSplit::kEval ? "eval" : split == CorpusSplit::kTrain ? "train" : "whole", " split under ",
           roots);
  return c;
}

Corpus load_mixture(const std::vector<DomainSpec>& domains, CorpusSplit split, int64_t max_bytes, int64_t block) {
  IS_CHECK(!domains.empty(), "mixture: no domains");
  IS_CHECK(block >= 1, "mixture: block must be >= 1");
  std::vector<Corpus> parts;
  std::string names;
  for (const auto& d : domains) {
    IS_CHECK(!(d.held_out && split == CorpusSplit::kTrain), "domain ", d.name,
             " is held out: it is never used for training or search");
    parts.push_back(load_domain(d, split, max_bytes > 0 ? max_bytes / static_cast<int64_t>(domains.size()) : 0));
    names += (names.empty() ? "" : "+") + d.name;
  }
  Corpus c;
  c.root = "domains " + names;
  c.split = split;
  for (const auto& p : parts)
    for (const auto& f : p.files) c.files.push_back(p.root.substr(7) + ":" + f);
  std::vector<size_t> at(parts.size(), 0);
  for (bool more = true; more;) {
    more = false;
    for (size_t i = 0; i < parts.size(); ++i) {
      const std::string& t = parts[i].text;
      if (at[i] >= t.size()) continue;
      const size_t n = std::min<size_t>(static_cast<size_t>(block), t.size() - at[i]);
      c.text.append(t, at[i], n);
      at[i] += n;
      more = true;
    }
  }
  return c;
}

Corpus load_training_text(const std::string& corpus_dir, const std::string& domains, int64_t max_bytes) {
  if (domains.empty())
    return load_corpus(corpus_dir.empty() ? default_corpus_dir() : corpus_dir, CorpusSplit::kTrain, max_bytes);
  IS_CHECK(corpus_dir.empty(), "give --corpus or --domains, not both");
  std::vector<DomainSpec> specs;
  if (domains == "all") {
    for (auto& d : builtin_domains())
      if (!d.held_out) specs.push_back(d);
  } else {
    for (size_t b = 0; b <= domains.size();) {
      const size_t e = std::min(domains.find(',', b), domains.size());
      specs.push_back(find_domain(domains.substr(b, e - b)));
      b = e + 1;
    }
  }
  return load_mixture(specs, CorpusSplit::kTrain, max_bytes);
}

}  // namespace indexshare::eval

// Text domains every Debian machine has, each with its own train / eval split, for measuring (and
// training) indexers beyond one kind of text.
//
//   python  the newest /usr/lib/python3.N/*.py (top level; the default corpus of eval/distill)
//   c       /usr/include/**/*.h (libc and friends; g++ is installed by scripts/setup.sh)
//   cmake   /usr/share/cmake-3.N/Modules/**/*.cmake (cmake is installed by scripts/setup.sh)
//   prose   /usr/share/common-licenses/* (base-files) and /usr/share/doc/**/README*, *.txt
//   config  /etc/**/*.conf
//   perl    /usr/lib/<triplet>/perl-base/**/*.pm (perl-base is Essential)  — HELD OUT: never
//           used by distill or search, only evaluated
//
// Split: a file is in the eval split when the FNV-1a hash of its path relative to the domain's
// root is 0 mod 4, else in the train split (the rule load_corpus applies to *.py names). Files
// are read in sorted order; each domain's text is what the machine has, so the numbers of two
// machines with other package sets differ (eval prints the file counts and bytes).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "eval/corpus.h"

namespace indexshare::eval {

struct DomainSpec {
  std::string name;
  std::string what;                 // one line for people
  std::vector<std::string> roots;   // folders (the first that exists per entry; globs not supported)
  std::vector<std::string> suffixes;  // file name ends with one of these ("" = any)
  std::vector<std::string> prefixes;  // or starts with one of these (README)
  bool recursive = true;
  bool held_out = false;            // never used for training or search
};

// The domains above, resolved on this machine (python: default_corpus_dir(); cmake and perl:
// the folder found under /usr/share and /usr/lib). A domain whose folders are all missing is
// still listed (load_domain then fails naming it).
std::vector<DomainSpec> builtin_domains();
// Looks a domain up by name; Error listing the names when unknown.
DomainSpec find_domain(const std::string& name);

// The domain's text of one split, files in sorted order of their relative path, up to max_bytes
// (0 = all). Corpus::root is "domain NAME". Error when the split holds no readable text.
Corpus load_domain(const DomainSpec& d, CorpusSplit split, int64_t max_bytes = 0);

// Training text from several domains: each domain's split loaded up to max_bytes / domains, then
// cut into blocks of `block` bytes that are interleaved round-robin (so a training sequence of a
// few thousand tokens comes from one domain, and consecutive ones from different domains).
// Error when a held-out domain is asked for with split kTrain.
Corpus load_mixture(const std::vector<DomainSpec>& domains, CorpusSplit split, int64_t max_bytes,
                    int64_t block = 24000);

// The training (or calibration) text of distill and search: with `domains` empty, the train split
// of the *.py corpus in `corpus_dir` (default_corpus_dir() when empty); with `domains` "all"
// (every domain not held out) or a comma list, load_mixture of their train splits. Error when
// both are given, on an unknown name, or on a held-out domain.
Corpus load_training_text(const std::string& corpus_dir, const std::string& domains, int64_t max_bytes);

}  // namespace indexshare::eval

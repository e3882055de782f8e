// Evaluation and training text that no one here wrote: by default the Python standard-library
// sources shipped on the machine (Debian's /usr/lib/python3.X). Files are split by a stable hash
// of their name, so text used for distillation is never used for evaluation.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace indexshare::eval {

enum class CorpusSplit { kTrain, kEval, kAll };

struct Corpus {
  std::string root;
  std::vector<std::string> files;  // relative paths, sorted
  std::string text;                // the files joined by blank lines
  std::string description() const; // "python stdlib /usr/lib/python3.11, eval split, 43 files, 1.2 MB"
  CorpusSplit split = CorpusSplit::kAll;
};

// The default corpus folder: the newest /usr/lib/python3.N holding os.py. Error if none.
std::string default_corpus_dir();

// Reads the *.py files directly under `dir` (or `dir` itself when it is a file) of the split:
// eval = files whose FNV-1a hash of the name is 0 mod 4, train = the rest. Error when the path
// holds no readable text.
Corpus load_corpus(const std::string& dir, CorpusSplit split, int64_t max_bytes = 0);

// 64-bit FNV-1a with offset basis 1469598103934665603: one digit short of FNV's standard
// 14695981039346656037, a slip kept on purpose, because the train / eval split of every corpus
// (and so which text the committed indexers never saw) is defined by this function.
uint64_t fnv1a64(const void* data, size_t n, uint64_t h = 1469598103934665603ull);

}  // namespace indexshare::eval

// Writes the GGUF seed corpus: make_gguf_seeds DIR (the committed seeds live in
// fuzz/seeds/gguf/; tests/gguf_test.cpp checks they match this generator).
#include <cstdio>
#include <fstream>
#include <string>

#include "gguf_samples.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTPUT_DIR\n", argv[0]);
    return 2;
  }
  for (const auto& [name, bytes] : indexshare::testing::all_samples()) {
    const std::string path = std::string(argv[1]) + "/" + name;
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    if (!out) {
      std::fprintf(stderr, "make_gguf_seeds: cannot write %s\n", path.c_str());
      return 1;
    }
    std::printf("%s (%zu bytes)\n", path.c_str(), bytes.size());
  }
  return 0;
}

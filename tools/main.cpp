// indexshare: the command-line front end. Subcommands live in tools/cmd_*.cpp.
#include <fmt/core.h>

#include <algorithm>
#include <exception>
#include <functional>

#include "command.h"
#include "core/error.h"
#include "core/thread_pool.h"
#ifdef INDEXSHARE_HAVE_CUDA
#include "cuda/engine/cuda_backend.h"
#endif

namespace indexshare::cli {
std::vector<CommandInfo>& command_registry() {
  static std::vector<CommandInfo> r;
  return r;
}
}  // namespace indexshare::cli

int main(int argc, char** argv) {
  using namespace indexshare;
#ifdef INDEXSHARE_HAVE_CUDA
  cuda::register_cuda_backend();
#endif
  CLI::App app{"IndexShare: sparse attention (DSA) with cross-layer indexer sharing"};
  app.require_subcommand(1);
  int threads = 0;
  app.add_option("-t,--threads", threads, "worker threads (default: all cores)")->check(CLI::NonNegativeNumber);

  auto& reg = cli::command_registry();
  std::sort(reg.begin(), reg.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  std::vector<std::function<int()>> runners(reg.size());
  std::vector<CLI::App*> subs(reg.size());
  for (size_t i = 0; i < reg.size(); ++i) {
    subs[i] = app.add_subcommand(reg[i].name, reg[i].help);
    runners[i] = reg[i].setup(*subs[i]);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (threads > 0) set_num_threads(threads);
    for (size_t i = 0; i < reg.size(); ++i)
      if (subs[i]->parsed()) return runners[i]();
  } catch (const Error& e) {
    fmt::print(stderr, "indexshare: error: {}\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "indexshare: unexpected error: {}\n", e.what());
    return 1;
  }
  return 1;
}

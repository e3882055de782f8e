#include "model_session.h"

#include <filesystem>

#include "core/error.h"

namespace indexshare::cli {

void add_model_option(CLI::App& app, std::string& path) {
  path = io::default_model_path();
  app.add_option("-m,--model", path, "GGUF model file (default: $INDEXSHARE_MODEL or the cached SmolLM2)")
      ->capture_default_str();
}

ModelSession load_model_session(const std::string& path) {
  IS_CHECK(std::filesystem::exists(path), path, ": model file not found",
           path == io::default_model_path() ? " (run scripts/fetch_model.sh to download the default model)" : "");
  ModelSession s;
  s.llama = io::load_llama(path);
  s.tokenizer = std::make_unique<io::Tokenizer>(io::Tokenizer::from_gguf(*s.llama.file));
  IS_CHECK(s.tokenizer->n_vocab() == s.model().config().vocab, path, ": tokenizer has ", s.tokenizer->n_vocab(),
           " tokens but the model's vocabulary is ", s.model().config().vocab);
  return s;
}

}  // namespace indexshare::cli

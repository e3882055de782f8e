// Shared by the model commands (generate, perplexity, eval, distill, search): the --model option,
// loading the GGUF model and its tokenizer, and reading text files.
#pragma once

#include <CLI/CLI.hpp>

#include <memory>
#include <string>

#include "io/llama_gguf.h"
#include "io/tokenizer.h"

namespace indexshare::cli {

struct ModelSession {
  io::LoadedLlama llama;
  std::unique_ptr<io::Tokenizer> tokenizer;
  const model::LlamaModel& model() const { return *llama.model; }
};

// Adds --model (default: io::default_model_path()) to a subcommand; `path` receives it.
void add_model_option(CLI::App& app, std::string& path);

// Loads the model and tokenizer; a missing default model names scripts/fetch_model.sh.
ModelSession load_model_session(const std::string& path);

}  // namespace indexshare::cli

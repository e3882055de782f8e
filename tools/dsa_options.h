// Options shared by the commands that run DSA on a Llama model: the sharing schedule
// (--pattern, or --freq/--offset with transformers' rule), top-k, and the indexer file.
#pragma once

#include <CLI/CLI.hpp>

#include <memory>
#include <optional>
#include <string>

#include "io/indexer_file.h"
#include "model/llama_dsa.h"
#include "share/schedule.h"

namespace indexshare::cli {

struct ScheduleArgs {
  std::string pattern;   // F/S/R string
  int64_t freq = 0;      // 0 = not given
  int64_t offset = 2;
};

// Adds --pattern, --freq, --offset.
void add_schedule_options(CLI::App& app, ScheduleArgs& a);
// The schedule the options describe for `layers` layers, or nullopt when none was given.
std::optional<share::Schedule> schedule_from_args(const ScheduleArgs& a, int layers);

// DSA on a Llama model for `generate` and `perplexity`: --dsa turns it on; --dsa-topk, --indexers
// (learned), --oracle (the true attention's top-k instead), and the schedule options.
struct DsaArgs {
  bool dsa = false;
  bool oracle = false;
  int topk = 0;            // 0: ctx / 8
  std::string indexers;    // required with --dsa unless --oracle
  std::string reindexers;  // R layers' indexers (required when the pattern has R)
  int candidates = 0;      // R layers: candidates per F layer (0: 2 x top-k)
  ScheduleArgs sched;
};
void add_dsa_options(CLI::App& app, DsaArgs& a);

// The backend the options describe (null without --dsa) and the indexer file it reads.
struct DsaSetup {
  std::unique_ptr<io::IndexerFile> file, refile;
  std::unique_ptr<model::LlamaDsaBackend> backend;
  std::string summary;  // one line for the user
};
// model_path: the GGUF (its fingerprint must match the indexer file's); ctx: tokens per sequence.
DsaSetup make_dsa(const DsaArgs& a, const model::LlamaConfig& cfg, const std::string& model_path, int64_t ctx);

}  // namespace indexshare::cli

#include "io/hf_config.h"

#include <algorithm>
#include <array>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <utility>

#include "core/error.h"
#include "io/mapped_file.h"

namespace indexshare::io {
namespace {

using nlohmann::json;

// Keys we recognise but do not use: they never produce a warning.
constexpr std::array kIgnoredKeys = {
    "_name_or_path", "architectures", "auto_map", "torch_dtype", "dtype", "transformers_version",
    "bos_token_id", "eos_token_id", "pad_token_id", "hidden_act", "initializer_range", "use_cache",
    "attention_dropout", "quantization_config", "ep_size", "pretraining_tp", "mlp_bias", "layer_types",
    "use_index_cache", "moe_router_dtype", "aux_loss_alpha", "seq_aux",
};

// Every indexer / schedule key we know. Another key with an "index_" / "indexer_" prefix is
// treated as a typo of one of these.
constexpr std::array kIndexerKeys = {
    "index_n_heads", "index_head_dim", "index_topk", "index_topk_freq", "index_skip_topk_offset",
    "index_topk_pattern", "index_share_for_mtp_iteration", "indexer_types", "indexer_rope_interleave",
    // Ours (reindex layers; transformers and vLLM do not read them).
    "index_reindex_candidates", "index_reindex_n_heads", "index_reindex_head_dim",
};

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// Reads typed values out of one JSON object and remembers which keys were consumed.
class Reader {
 public:
  Reader(const json& obj, std::string source, std::string prefix)
      : obj_(obj), source_(std::move(source)), prefix_(std::move(prefix)) {}

  [[noreturn]] void error(std::string_view key, const std::string& what) const {
    fail(source_, ": key '", prefix_, key, "': ", what);
  }

  // The value, or nullptr when absent. A JSON null counts as absent unless keep_null.
  const json* find(std::string_view key, bool keep_null = false) {
    used_.insert(std::string(key));
    auto it = obj_.find(key);
    if (it == obj_.end() || (!keep_null && it->is_null())) return nullptr;
    return &*it;
  }
  const json& need(std::string_view key) {
    const json* j = find(key, true);
    if (!j) fail(source_, ": missing required key '", prefix_, key, "'", required_for_);
    if (j->is_null()) error(key, "is null; expected a value");
    return *j;
  }
  void set_required_context(std::string s) { required_for_ = std::move(s); }

  int64_t as_int(std::string_view key, const json& j) const {
    if (!j.is_number_integer()) error(key, cat("expected an integer, got ", j.type_name()));
    if (j.is_number_unsigned() && j.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) error(key, "integer too large");
    return j.get<int64_t>();
  }
  double as_double(std::string_view key, const json& j) const {
    if (!j.is_number()) error(key, cat("expected a number, got ", j.type_name()));
    return j.get<double>();
  }
  bool as_bool(std::string_view key, const json& j) const {
    if (!j.is_boolean()) error(key, cat("expected true or false, got ", j.type_name()));
    return j.get<bool>();
  }
  std::string as_string(std::string_view key, const json& j) const {
    if (!j.is_string()) error(key, cat("expected a string, got ", j.type_name()));
    return j.get<std::string>();
  }
  std::vector<std::string> as_string_list(std::string_view key, const json& j) const {
    if (!j.is_array()) error(key, cat("expected an array of strings, got ", j.type_name()));
    std::vector<std::string> r;
    for (size_t i = 0; i < j.size(); ++i) {
      if (!j[i].is_string()) error(key, cat("entry ", i, ": expected a string, got ", j[i].type_name()));
      r.push_back(j[i].get<std::string>());
    }
    return r;
  }

  int64_t req_int(std::string_view key, int64_t min_value) {
    const int64_t v = as_int(key, need(key));
    check_min(key, v, min_value);
    return v;
  }
  std::optional<int64_t> opt_int(std::string_view key, int64_t min_value) {
    const json* j = find(key);
    if (!j) return std::nullopt;
    const int64_t v = as_int(key, *j);
    check_min(key, v, min_value);
    return v;
  }
  std::optional<double> opt_double(std::string_view key) {
    const json* j = find(key);
    return j ? std::optional<double>(as_double(key, *j)) : std::nullopt;
  }
  std::optional<bool> opt_bool(std::string_view key) {
    const json* j = find(key);
    return j ? std::optional<bool>(as_bool(key, *j)) : std::nullopt;
  }
  std::optional<std::string> opt_string(std::string_view key) {
    const json* j = find(key);
    return j ? std::optional<std::string>(as_string(key, *j)) : std::nullopt;
  }
  std::optional<std::vector<std::string>> opt_string_list(std::string_view key) {
    const json* j = find(key);
    return j ? std::optional<std::vector<std::string>>(as_string_list(key, *j)) : std::nullopt;
  }

  // Keys present in the object that nobody read.
  std::vector<std::string> unused() const {
    std::vector<std::string> r;
    for (auto it = obj_.begin(); it != obj_.end(); ++it)
      if (!used_.count(it.key())) r.push_back(it.key());
    return r;
  }
  const std::string& source() const { return source_; }

 private:
  void check_min(std::string_view key, int64_t v, int64_t min_value) const {
    if (v < min_value) error(key, cat(v, " must be >= ", min_value));
  }

  const json& obj_;
  std::string source_, prefix_, required_for_;
  std::set<std::string> used_;
};

void read_rope_object(Reader& r, RopeConfig& rope, std::vector<std::string>& warnings, const std::string& name) {
  if (auto t = r.opt_string("rope_type")) rope.rope_type = *t;
  else if (auto t2 = r.opt_string("type")) rope.rope_type = *t2;  // older spelling
  if (auto th = r.opt_double("rope_theta")) rope.theta = *th;
  rope.factor = r.opt_double("factor");
  rope.original_max_position_embeddings = r.opt_int("original_max_position_embeddings", 1);
  rope.beta_fast = r.opt_double("beta_fast");
  rope.beta_slow = r.opt_double("beta_slow");
  rope.mscale = r.opt_double("mscale");
  rope.mscale_all_dim = r.opt_double("mscale_all_dim");
  for (const auto& k : r.unused()) warnings.push_back(cat("unknown key '", name, ".", k, "' ignored"));
}

void read_rope(Reader& r, const json& root, HfConfig& c) {
  const auto top_theta = r.opt_double("rope_theta");
  if (top_theta) c.rope.theta = *top_theta;
  for (const char* name : {"rope_parameters", "rope_scaling"}) {
    const json* j = r.find(name);
    if (!j) continue;
    if (!j->is_object()) r.error(name, cat("expected an object or null, got ", j->type_name()));
    Reader sub(*j, r.source(), std::string(name) + ".");
    read_rope_object(sub, c.rope, c.warnings, name);
    if (std::string_view(name) == "rope_parameters") {
      // rope_parameters is the complete, newer form; an older rope_scaling beside it is ignored.
      if (root.contains("rope_scaling") && !root["rope_scaling"].is_null())
        c.warnings.push_back("both rope_parameters and rope_scaling are set; rope_scaling ignored");
      r.find("rope_scaling");
      break;
    }
  }
}

void read_dsa(Reader& r, HfConfig& c) {
  // q_lora_rank must be present; null means no q LoRA.
  const json* q = r.find("q_lora_rank", true);
  if (!q) fail(r.source(), ": missing required key 'q_lora_rank' (null if the model has no q LoRA)");
  if (!q->is_null()) {
    c.q_lora_rank = r.as_int("q_lora_rank", *q);
    if (*c.q_lora_rank < 1) r.error("q_lora_rank", cat(*c.q_lora_rank, " must be >= 1 (or null)"));
  }
  c.kv_lora_rank = r.req_int("kv_lora_rank", 1);
  c.qk_nope_head_dim = r.req_int("qk_nope_head_dim", 1);
  c.qk_rope_head_dim = r.req_int("qk_rope_head_dim", 1);
  c.v_head_dim = r.req_int("v_head_dim", 1);
  c.moe_intermediate_size = r.req_int("moe_intermediate_size", 1);
  c.n_routed_experts = r.req_int("n_routed_experts", 1);
  c.n_shared_experts = r.req_int("n_shared_experts", 0);
  c.num_experts_per_tok = r.req_int("num_experts_per_tok", 1);
  if (c.num_experts_per_tok > c.n_routed_experts)
    r.error("num_experts_per_tok", cat(c.num_experts_per_tok, " exceeds n_routed_experts = ", c.n_routed_experts));
  c.n_group = r.opt_int("n_group", 1);
  c.topk_group = r.opt_int("topk_group", 1);
  c.routed_scaling_factor = r.opt_double("routed_scaling_factor");
  c.norm_topk_prob = r.opt_bool("norm_topk_prob");
  c.scoring_func = r.opt_string("scoring_func");
  c.topk_method = r.opt_string("topk_method");
  c.first_k_dense_replace = r.opt_int("first_k_dense_replace", 0);
  c.moe_layer_freq = r.opt_int("moe_layer_freq", 1);
  c.mlp_layer_types = r.opt_string_list("mlp_layer_types");
  if (c.mlp_layer_types) {
    const auto& t = *c.mlp_layer_types;
    if (static_cast<int64_t>(t.size()) != c.num_hidden_layers)
      r.error("mlp_layer_types", cat("has ", t.size(), " entries but num_hidden_layers = ", c.num_hidden_layers));
    for (size_t i = 0; i < t.size(); ++i)
      if (t[i] != "dense" && t[i] != "sparse")
        r.error("mlp_layer_types", cat("entry ", i, " = \"", t[i], "\": expected \"dense\" or \"sparse\""));
  } else if (!c.first_k_dense_replace) {
    fail(r.source(), ": missing required key 'first_k_dense_replace' (or 'mlp_layer_types')");
  }
  if (auto v = r.opt_bool("rope_interleave")) c.rope_interleave = *v;

  c.index_n_heads = r.req_int("index_n_heads", 1);
  c.index_head_dim = r.req_int("index_head_dim", 1);
  c.index_topk = r.req_int("index_topk", 1);
  if (c.qk_rope_head_dim > c.index_head_dim)
    r.error("qk_rope_head_dim", cat(c.qk_rope_head_dim, " exceeds index_head_dim = ", c.index_head_dim,
                                    " (the indexer rotates its first qk_rope_head_dim dims)"));
  if (auto v = r.opt_bool("indexer_rope_interleave")) c.indexer_rope_interleave = *v;
  c.indexer_types = r.opt_string_list("indexer_types");
  c.index_topk_pattern = r.opt_string("index_topk_pattern");
  if (const json* j = r.find("index_topk_freq")) c.index_topk_freq = r.as_int("index_topk_freq", *j);
  if (const json* j = r.find("index_skip_topk_offset")) c.index_skip_topk_offset = r.as_int("index_skip_topk_offset", *j);
  c.index_reindex_candidates = r.opt_int("index_reindex_candidates", 1).value_or(0);
  c.index_reindex_n_heads = r.opt_int("index_reindex_n_heads", 1).value_or(0);
  c.index_reindex_head_dim = r.opt_int("index_reindex_head_dim", 1).value_or(0);
  if (c.index_reindex_candidates && c.index_reindex_candidates < c.index_topk)
    r.error("index_reindex_candidates", cat(c.index_reindex_candidates, " is less than index_topk = ", c.index_topk,
                                            " (an R layer keeps its top-k of these candidates)"));
  c.index_share_for_mtp_iteration = r.opt_bool("index_share_for_mtp_iteration");
  c.num_nextn_predict_layers = r.opt_int("num_nextn_predict_layers", 0).value_or(0);
  r.find("head_dim");  // GLM ships a misleading head_dim; MLA uses qk_*_head_dim
}

}  // namespace

std::string_view family_name(ModelFamily f) {
  switch (f) {
    case ModelFamily::kGlmMoeDsa: return "glm_moe_dsa";
    case ModelFamily::kDeepseekV32: return "deepseek_v32";
    case ModelFamily::kLlama: return "llama";
  }
  return "?";
}

bool HfConfig::is_moe_layer(int64_t layer) const {
  IS_CHECK(layer >= 0 && layer < num_hidden_layers, source, ": layer ", layer, " out of range [0, ",
           num_hidden_layers, ")");
  if (!is_dsa()) return false;
  if (mlp_layer_types) return (*mlp_layer_types)[static_cast<size_t>(layer)] == "sparse";
  const int64_t freq = moe_layer_freq.value_or(1);
  return layer >= first_k_dense_replace.value_or(0) && layer % freq == 0;
}

share::ScheduleInput HfConfig::schedule_input() const {
  share::ScheduleInput in;
  in.num_layers = static_cast<int>(num_hidden_layers);
  in.indexer_types = indexer_types;
  in.index_topk_pattern = index_topk_pattern;
  in.index_topk_freq = index_topk_freq;
  in.index_skip_topk_offset = index_skip_topk_offset;
  return in;
}

const share::Schedule& HfConfig::schedule() const {
  IS_CHECK(resolved_schedule.has_value(), source, ": model_type '", model_type,
           "' has no lightning indexer, so no F/S schedule");
  return *resolved_schedule;
}

HfConfig parse_hf_config(std::string_view json_text, std::string_view source) {
  HfConfig c;
  c.source = std::string(source);
  json root;
  try {
    root = json::parse(json_text);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for a number past a double
    fail(c.source, ": invalid JSON: ", e.what());
  }
  IS_CHECK(root.is_object(), c.source, ": expected a JSON object at the top level, got ", root.type_name());
  Reader r(root, c.source, "");

  const json* mt = r.find("model_type");
  IS_CHECK(mt, c.source, ": missing required key 'model_type'");
  c.model_type = r.as_string("model_type", *mt);
  if (c.model_type == "glm_moe_dsa") c.family = ModelFamily::kGlmMoeDsa;
  else if (c.model_type == "deepseek_v32") c.family = ModelFamily::kDeepseekV32;
  else if (c.model_type == "llama") c.family = ModelFamily::kLlama;
  else fail(c.source, ": unknown model_type '", c.model_type, "'; supported: glm_moe_dsa, deepseek_v32, llama");
  r.set_required_context(cat(" (model_type ", c.model_type, ")"));

  // Unknown indexer-like keys are errors: check them before anything else so a typo is
  // reported as such rather than as a downstream symptom.
  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string& k = it.key();
    if ((starts_with(k, "index_") || starts_with(k, "indexer_")) &&
        std::find(kIndexerKeys.begin(), kIndexerKeys.end(), k) == kIndexerKeys.end()) {
      std::string known;
      for (const char* n : kIndexerKeys) known += cat(known.empty() ? "" : ", ", n);
      fail(c.source, ": unknown key '", k, "' looks like an indexer key (typo?); known indexer keys: ", known);
    }
  }

  c.hidden_size = r.req_int("hidden_size", 1);
  c.num_hidden_layers = r.req_int("num_hidden_layers", 1);
  IS_CHECK(c.num_hidden_layers <= 1'000'000, c.source, ": key 'num_hidden_layers': ", c.num_hidden_layers,
           " is implausibly large");
  c.num_attention_heads = r.req_int("num_attention_heads", 1);
  c.num_key_value_heads = r.opt_int("num_key_value_heads", 1).value_or(c.num_attention_heads);
  c.intermediate_size = r.req_int("intermediate_size", 1);
  c.vocab_size = r.req_int("vocab_size", 1);
  if (auto e = r.opt_double("rms_norm_eps")) c.rms_norm_eps = *e;
  c.max_position_embeddings = r.opt_int("max_position_embeddings", 1).value_or(0);
  c.tie_word_embeddings = r.opt_bool("tie_word_embeddings").value_or(false);
  c.attention_bias = r.opt_bool("attention_bias").value_or(false);
  read_rope(r, root, c);

  if (c.is_dsa()) {
    read_dsa(r, c);
    try {
      c.resolved_schedule = share::Schedule::resolve(c.schedule_input());
    } catch (const Error& e) {
      fail(c.source, ": ", e.what());
    }
    IS_CHECK(!c.resolved_schedule->has_reindex() || c.index_reindex_candidates > 0, c.source, ": the schedule ",
             c.resolved_schedule->pattern(), " has reindex (R) layers but 'index_reindex_candidates' is missing");
  } else {
    c.head_dim = r.opt_int("head_dim", 1);
    if (!c.head_dim) {
      if (c.hidden_size % c.num_attention_heads != 0)
        r.error("num_attention_heads", cat(c.num_attention_heads, " does not divide hidden_size = ", c.hidden_size,
                                           " and head_dim is absent"));
      c.head_dim = c.hidden_size / c.num_attention_heads;
    }
    if (c.num_attention_heads % c.num_key_value_heads != 0)
      r.error("num_key_value_heads", cat(c.num_key_value_heads, " does not divide num_attention_heads = ",
                                         c.num_attention_heads));
    for (const char* k : kIndexerKeys)
      if (r.find(k)) c.warnings.push_back(cat("key '", k, "' ignored: model_type llama has no indexer"));
  }

  for (const auto& k : r.unused())
    if (std::find_if(kIgnoredKeys.begin(), kIgnoredKeys.end(), [&](const char* n) { return k == n; }) ==
        kIgnoredKeys.end())
      c.warnings.push_back(cat("unknown key '", k, "' ignored"));
  return c;
}

HfConfig read_hf_config(const std::string& path) { return parse_hf_config(read_text_file(path), path); }

}  // namespace indexshare::io

#include "share/dsa_stack.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "core/error.h"

namespace indexshare::share {

DsaStack::DsaStack(Schedule schedule, const DsaStackOptions& opt, backend::Backend& be)
    : schedule_(std::move(schedule)), opt_(opt), be_(be) {
  const bool selection_free = opt_.index_heads == 0 && opt_.index_dim == 0;
  IS_CHECK(selection_free || opt_.index_heads >= 1, "DSA stack: index_heads = ", opt_.index_heads, " must be >= 1");
  IS_CHECK(selection_free || opt_.index_dim >= 1, "DSA stack: index_dim = ", opt_.index_dim, " must be >= 1");
  IS_CHECK(opt_.topk >= 1, "DSA stack: topk = ", opt_.topk, " must be >= 1");
  IS_CHECK(opt_.pages >= 1, "DSA stack: pages = ", opt_.pages, " must be >= 1");
  IS_CHECK(opt_.index_scale >= 0 && std::isfinite(opt_.index_scale), "DSA stack: index_scale = ", opt_.index_scale,
           " must be finite and >= 0");
  caches_.resize(static_cast<size_t>(schedule_.num_layers()));
  cand_ = opt_.topk;
  if (schedule_.has_reindex())
    IS_CHECK(opt_.candidates >= opt_.topk, "DSA stack: the schedule ", schedule_.pattern(),
             " has reindex (R) layers, which need candidates >= topk (", opt_.topk, "), got ", opt_.candidates);
  IS_CHECK(opt_.candidates == 0 || opt_.candidates >= opt_.topk, "DSA stack: candidates = ", opt_.candidates,
           " must be 0 or >= topk (", opt_.topk, ")");
  // Candidates kept apart from the set when R layers read them, or when asked for without R
  // layers (a caller that resumes under a schedule with R layers from this one's state).
  two_buffers_ = schedule_.has_reindex() || opt_.candidates > opt_.topk;
  if (two_buffers_) cand_ = opt_.candidates;
  if (selection_free) {
    IS_CHECK(!schedule_.has_reindex(), "DSA stack: reindex (R) layers need an indexer of their own; this stack has none");
    return;
  }
  if (opt_.index_scale == 0)
    opt_.index_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(opt_.index_heads) * opt_.index_dim));
  backend::IndexerSpec spec;
  spec.heads = opt_.index_heads;
  spec.dim = opt_.index_dim;
  spec.topk = cand_;
  spec.scale = opt_.index_scale;
  spec.format = opt_.format;
  backend::IndexerSpec rspec = spec;
  if (schedule_.has_reindex()) {
    IS_CHECK(opt_.reindex_heads >= 0 && opt_.reindex_dim >= 0 && opt_.reindex_scale >= 0 &&
                 std::isfinite(opt_.reindex_scale),
             "DSA stack: bad reindex indexer shape (heads ", opt_.reindex_heads, ", dim ", opt_.reindex_dim, ", scale ",
             opt_.reindex_scale, ")");
    rspec.heads = opt_.reindex_heads > 0 ? opt_.reindex_heads : opt_.index_heads;
    rspec.dim = opt_.reindex_dim > 0 ? opt_.reindex_dim : opt_.index_dim;
    rspec.topk = opt_.topk;
    rspec.scale = opt_.reindex_scale > 0 ? opt_.reindex_scale
                                         : static_cast<float>(1.0 / std::sqrt(static_cast<double>(rspec.heads) * rspec.dim));
    opt_.reindex_heads = rspec.heads;
    opt_.reindex_dim = rspec.dim;
    opt_.reindex_scale = rspec.scale;
  }
  for (int i = 0; i < schedule_.num_layers(); ++i) {
    if (schedule_.is_full(i)) caches_[static_cast<size_t>(i)] = be_.new_indexer_cache(opt_.pages, spec);
    if (schedule_.is_reindex(i)) caches_[static_cast<size_t>(i)] = be_.new_indexer_cache(opt_.pages, rspec);
  }
}

const backend::Step& DsaStack::step() const {
  IS_CHECK(step_ != nullptr, "DSA stack: no step has begun (call begin_step first)");
  return *step_;
}

void DsaStack::check_full(int layer, const char* what) const {
  IS_CHECK(layer >= 0 && layer < schedule_.num_layers(), "DSA stack: ", what, ": layer ", layer, " out of range [0, ",
           schedule_.num_layers(), ")");
  IS_CHECK(schedule_.is_full(layer), "DSA stack: ", what, ": layer ", layer, " is ",
           schedule_.is_reindex(layer) ? "reindex (R)" : "shared (S)", " in ", schedule_.pattern(),
           ", not full (F)");
}

void DsaStack::check_indexed(int layer, const char* what) const {
  IS_CHECK(layer >= 0 && layer < schedule_.num_layers(), "DSA stack: ", what, ": layer ", layer, " out of range [0, ",
           schedule_.num_layers(), ")");
  IS_CHECK(schedule_.has_indexer(layer), "DSA stack: ", what, ": layer ", layer, " is shared (S) in ",
           schedule_.pattern(), " and runs no indexer");
}

void DsaStack::begin_step(const backend::Step& s) {
  IS_CHECK(s.rows() >= 1, "DSA stack: a step needs at least one row");
  const int64_t R = s.rows(), K = opt_.topk;
  if (!logical_store_.defined() || logical_store_.dim(0) < R) {
    const int64_t cap = std::max<int64_t>(R, 64);
    logical_store_ = be_.alloc(DType::kI32, {cap, K});
    physical_store_ = be_.alloc(DType::kI32, {cap, K});
    if (two_buffers_) {
      cand_logical_store_ = be_.alloc(DType::kI32, {cap, cand_});
      cand_physical_store_ = be_.alloc(DType::kI32, {cap, cand_});
    }
  }
  logical_ = logical_store_.rows(0, R);
  physical_ = physical_store_.rows(0, R);
  // Without R layers (C = K) the candidates are the set itself.
  cand_logical_ = two_buffers_ ? cand_logical_store_.rows(0, R) : logical_;
  cand_physical_ = two_buffers_ ? cand_physical_store_.rows(0, R) : physical_;
  step_ = &s;
  source_ = -1;
  cand_source_ = -1;
  ++counters_.steps;
}

void DsaStack::append_keys(int layer, const Tensor& k) { append_keys(layer, step(), k); }

void DsaStack::append_keys(int layer, const backend::Step& s, const Tensor& k) {
  check_indexed(layer, "append_keys");
  IS_CHECK(caches_[static_cast<size_t>(layer)] != nullptr,
           "DSA stack: this stack has no indexer (its sets are given with set_topk)");
  be_.indexer_append(*caches_[static_cast<size_t>(layer)], s, k);
}

void DsaStack::set_from_candidates() {
  if (!two_buffers_) return;  // one buffer
  be_.copy_columns(logical_, cand_logical_);
  be_.copy_columns(physical_, cand_physical_);
}

void DsaStack::index(int layer, const Tensor& q, const Tensor& w, const Tensor& k) {
  check_full(layer, "index");
  append_keys(layer, k);
  be_.indexer_select(*caches_[static_cast<size_t>(layer)], step(), q, w, cand_logical_, cand_physical_);
  set_from_candidates();
  source_ = cand_source_ = layer;
  ++counters_.indexer_calls;
}

void DsaStack::reindex(int layer, const Tensor& q, const Tensor& w, const Tensor& k) {
  IS_CHECK(layer >= 0 && layer < schedule_.num_layers() && schedule_.is_reindex(layer), "DSA stack: reindex: layer ",
           layer, " is not a reindex (R) layer in ", schedule_.pattern());
  const int src = schedule_.full_source(layer);
  IS_CHECK(cand_source_ == src, "DSA stack: R layer ", layer, " re-scores the candidates of F layer ", src, " but ",
           cand_source_ < 0 ? std::string("no F layer has run in this step")
                            : cat("the candidates are layer ", cand_source_, "'s"));
  append_keys(layer, k);
  be_.indexer_rescore(*caches_[static_cast<size_t>(layer)], step(), q, w, cand_logical_, cand_physical_, logical_,
                      physical_);
  source_ = layer;
  ++counters_.reindex_calls;
}

void DsaStack::set_topk(int layer, const std::vector<int32_t>& logical) {
  check_full(layer, "set_topk");
  const backend::Step& s = step();
  IS_CHECK(static_cast<int64_t>(logical.size()) == s.rows() * cand_, "DSA stack: set_topk got ", logical.size(),
           " entries for ", s.rows(), " rows of ", two_buffers_ ? "candidates " : "top-", cand_);
  be_.upload(cand_logical_, logical.data());
  be_.to_physical(s, cand_logical_, cand_physical_);
  set_from_candidates();
  source_ = cand_source_ = layer;
  ++counters_.forced_sets;
}

const Tensor& DsaStack::candidates_logical() const {
  IS_CHECK(cand_source_ >= 0, "DSA stack: no F layer has left candidates in this step");
  return cand_logical_;
}

void DsaStack::check_source(int layer) const {
  IS_CHECK(layer >= 0 && layer < schedule_.num_layers(), "DSA stack: layer ", layer, " out of range [0, ",
           schedule_.num_layers(), ")");
  const int src = schedule_.source(layer);
  IS_CHECK(source_ == src, "DSA stack: layer ", layer, " reads the top-k of F layer ", src, " but ",
           source_ < 0 ? std::string("no F layer has run in this step") : cat("the buffer holds layer ", source_, "'s"));
}

const Tensor& DsaStack::topk(int layer) {
  check_source(layer);
  if (schedule_.is_shared(layer)) ++counters_.shared_reuses;
  return physical_;
}

const Tensor& DsaStack::topk_logical(int layer) const {
  check_source(layer);
  return logical_;
}

void DsaStack::scores(int layer, const Tensor& q, const Tensor& w, const Tensor& out) {
  check_indexed(layer, "scores");
  IS_CHECK(caches_[static_cast<size_t>(layer)] != nullptr, "DSA stack: this stack has no indexer");
  be_.indexer_scores(*caches_[static_cast<size_t>(layer)], step(), q, w, out);
}

const backend::IndexerCache* DsaStack::cache(int layer) const {
  IS_CHECK(layer >= 0 && layer < schedule_.num_layers(), "DSA stack: layer ", layer, " out of range");
  return caches_[static_cast<size_t>(layer)].get();
}

size_t DsaStack::indexer_cache_bytes(int layer) const {
  const auto* c = cache(layer);
  return c ? c->bytes() : 0;
}

size_t DsaStack::indexer_cache_bytes() const {
  size_t n = 0;
  for (const auto& c : caches_)
    if (c) n += c->bytes();
  return n;
}

void DsaStack::count_replayed_step() {
  ++counters_.steps;
  counters_.indexer_calls += schedule_.num_full();
  counters_.reindex_calls += schedule_.num_reindex();
  counters_.shared_reuses += schedule_.num_shared();
}

DsaSavedTopk DsaStack::save() const {
  DsaSavedTopk s;
  s.source = source_;
  if (source_ < 0) return s;
  s.rows = logical_.dim(0);
  s.logical.resize(static_cast<size_t>(logical_.numel()));
  s.physical.resize(static_cast<size_t>(physical_.numel()));
  be_.download(s.logical.data(), logical_);
  be_.download(s.physical.data(), physical_);
  if (two_buffers_ && cand_source_ >= 0) {
    s.cand_source = cand_source_;
    s.cand_logical.resize(static_cast<size_t>(cand_logical_.numel()));
    s.cand_physical.resize(static_cast<size_t>(cand_physical_.numel()));
    be_.download(s.cand_logical.data(), cand_logical_);
    be_.download(s.cand_physical.data(), cand_physical_);
  }
  return s;
}

void DsaStack::restore(const DsaSavedTopk& s) {
  const backend::Step& st = step();
  if (s.source < 0) {
    source_ = -1;
    return;
  }
  IS_CHECK(s.rows == st.rows() && static_cast<int64_t>(s.logical.size()) == s.rows * opt_.topk &&
               s.physical.size() == s.logical.size(),
           "DSA stack: restore of ", s.rows, " rows into a step of ", st.rows());
  IS_CHECK(s.source < schedule_.num_layers() && schedule_.has_indexer(s.source), "DSA stack: restore from layer ",
           s.source, ", which is not an F or R layer");
  be_.upload(logical_, s.logical.data());
  be_.upload(physical_, s.physical.data());
  source_ = s.source;
  cand_source_ = !two_buffers_ && schedule_.is_full(s.source) ? s.source : -1;
  if (two_buffers_ && s.cand_source >= 0) {
    IS_CHECK(s.cand_source < schedule_.num_layers() && schedule_.is_full(s.cand_source) &&
                 static_cast<int64_t>(s.cand_logical.size()) == s.rows * cand_ &&
                 s.cand_physical.size() == s.cand_logical.size(),
             "DSA stack: restore of candidates from layer ", s.cand_source, " (", s.cand_logical.size(),
             " entries for ", s.rows, " rows of ", cand_, ")");
    be_.upload(cand_logical_, s.cand_logical.data());
    be_.upload(cand_physical_, s.cand_physical.data());
    cand_source_ = s.cand_source;
  }
}

}  // namespace indexshare::share

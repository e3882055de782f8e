#include "core/ggml_type.h"

#include "core/error.h"

namespace indexshare {
namespace {

struct Entry {
  uint32_t id;
  GgmlTypeTraits traits;
};

// Block geometry per ggml's type table (ggml.c type_traits; block structs in ggml-common.h).
constexpr Entry kTable[] = {
    {0, {"f32", 1, 4}},       {1, {"f16", 1, 2}},        {2, {"q4_0", 32, 18}},
    {3, {"q4_1", 32, 20}},    {6, {"q5_0", 32, 22}},     {7, {"q5_1", 32, 24}},
    {8, {"q8_0", 32, 34}},    {9, {"q8_1", 32, 36}},     {10, {"q2_K", 256, 84}},
    {11, {"q3_K", 256, 110}}, {12, {"q4_K", 256, 144}},  {13, {"q5_K", 256, 176}},
    {14, {"q6_K", 256, 210}}, {15, {"q8_K", 256, 292}},  {16, {"iq2_xxs", 256, 66}},
    {17, {"iq2_xs", 256, 74}}, {18, {"iq3_xxs", 256, 98}}, {19, {"iq1_s", 256, 50}},
    {20, {"iq4_nl", 32, 18}}, {21, {"iq3_s", 256, 110}}, {22, {"iq2_s", 256, 82}},
    {23, {"iq4_xs", 256, 136}}, {24, {"i8", 1, 1}},      {25, {"i16", 1, 2}},
    {26, {"i32", 1, 4}},      {27, {"i64", 1, 8}},       {28, {"f64", 1, 8}},
    {29, {"iq1_m", 256, 56}}, {30, {"bf16", 1, 2}},      {34, {"tq1_0", 256, 54}},
    {35, {"tq2_0", 256, 66}}, {39, {"mxfp4", 32, 17}},   {40, {"nvfp4", 64, 36}},
    {41, {"q1_0", 128, 18}},
};

}  // namespace

std::optional<GgmlTypeTraits> ggml_type_traits(uint32_t id) {
  for (const Entry& e : kTable) {
    if (e.id == id) return e.traits;
  }
  return std::nullopt;
}

bool ggml_type_known(uint32_t id) { return ggml_type_traits(id).has_value(); }

std::string_view ggml_type_name(GgmlType t) {
  const auto tr = ggml_type_traits(static_cast<uint32_t>(t));
  return tr ? tr->name : std::string_view("unknown");
}

int64_t ggml_row_bytes(GgmlType t, int64_t n) {
  const auto tr = ggml_type_traits(static_cast<uint32_t>(t));
  IS_CHECK(tr.has_value(), "ggml_row_bytes: unknown ggml type id ", static_cast<uint32_t>(t));
  IS_CHECK(n >= 0, "ggml_row_bytes: element count ", n, " is negative");
  IS_CHECK(n % tr->block_size == 0, "ggml_row_bytes: element count ", n,
           " is not a multiple of the ", tr->name, " block size ", tr->block_size);
  int64_t bytes = 0;
  IS_CHECK(!__builtin_mul_overflow(n / tr->block_size, tr->type_size, &bytes),
           "ggml_row_bytes: size of ", n, " ", tr->name, " elements overflows");
  return bytes;
}

}  // namespace indexshare

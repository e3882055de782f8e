// Built-in model configs for the cost model, written as Hugging Face config.json text and read
// through io::parse_hf_config (so a preset is checked exactly like a file).
//   glm5           GLM-5 / GLM-5.1 (78 layers, every layer F)
//   glm5.2         GLM-5.2: the same shapes, index_topk_freq 4, index_skip_topk_offset 3 (21 F)
//   deepseek-v3.2  DeepSeek-V3.2(-Exp) (61 layers, every layer F)
// Values: shared/reference/dsa-spec.md §f; intermediate sizes as in the published configs.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "io/hf_config.h"

namespace indexshare::cost {

std::vector<std::string> preset_names();
// The config.json text of a preset; throws Error listing the valid names for an unknown one.
std::string preset_json(std::string_view name);
io::HfConfig preset_config(std::string_view name);

}  // namespace indexshare::cost

#include <memory>

#include "cli/verbs.h"
#include "formats/model_dir.h"

namespace distill::cli {

VerbRun add_inspect(CLI::App& app) {
  auto dir = std::make_shared<std::string>();
  app.add_option("model", *dir, "model directory")->required();
  return [dir]() {
    std::unique_ptr<Model> model = load_model_dir(*dir);
    const ModelConfig& c = model->config();
    std::printf("%s: model_type %s, %d layers, hidden %d, heads %d (kv %d, head_dim %d), mlp %d, "
                "vocab %d, %zu parameters\n", dir->c_str(), c.model_type.c_str(), c.num_layers,
                c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim, c.intermediate_size,
                c.vocab_size, model->num_params());
    for (const ParamSpec& s : model->param_specs()) {
      std::string shape;
      for (int64_t d : s.hf_shape()) shape += (shape.empty() ? "" : ", ") + std::to_string(d);
      std::printf("  %-50s [%s]\n", s.name.c_str(), shape.c_str());
    }
    return 0;
  };
}

}  // namespace distill::cli

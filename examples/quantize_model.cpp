// quantize_model — quantize a real model with one or more recipes and measure what it costs.
//
//   quantize_model [--recipe rtn,gptq,awq] [--bits 3] [--group 32] [--threads 2]
//                  [--calib 0-249] [--eval 250-499] [--out results] [--bpw 2.77,3.77]
//
// Defaults: the bundled stories260K model and tokenizer, calibration on stories 0-249 of the
// TinyStories dev text and evaluation on stories 250-499 (never the same stories). For each
// recipe and bit width it quantizes the model layer by layer (qtl::model::quantize_sequential),
// runs the quantized model on the packed weights, and prints one Markdown table:
// recipe, bits/weight, perplexity, ΔPPL vs fp32, KL(fp32 || quantized), quantization time and
// evaluation tokens/s. Progress goes to stderr; --out also writes PREFIX.md and PREFIX.csv.
//
// --bpw B1,B2,...: mixed precision under a budget (qtl/model/mixed_precision.hpp). For each
// recipe, every matrix's sensitivity (KL of the model with that matrix alone quantized) is
// measured at 2/3/4 bits with groups of 32 or per row and at 8 bits per row, on the first
// --sensitivity-stories calibration stories; then per budget the widths minimizing the summed KL
// under B bits per weight are chosen, the model is quantized with them and evaluated like the
// rest (row "RECIPE-mixed"). The choice and the predicted perplexity are printed below the table.
// A block-wise recipe (autoround) has no per-matrix quantization to measure: its sensitivities
// come from --sensitivity-recipe (default gptq-refine), and the block-wise recipe then tunes
// each block with the allocated widths (qtl::model::MixedBlockReconstructionRecipe).
// --finetune-norms: after each quantization, the model's RMSNorm gains are tuned end to end to
// the fp32 model's output distribution on the calibration stories (qtl::model::finetune_norms,
// --finetune-steps Adam steps); each such model is its own row, "RECIPE+norms". --finetune-scales
// tunes the gains and the group scales of the uniform codes (finetune_model with scales; the
// size in bits is unchanged), row "RECIPE+scales".
// --candidates [RECIPE:]BITS[:GROUP],... adds candidates to the allocation's choices: quantized
// by other recipes (e.g. gptaq-e8p:2, E8P vector codes at 2.14-2.25 bits per weight), or by the
// row's own recipe at widths the default set (2, 3, 4 bits per row and group 32, 8 per row)
// leaves out (e.g. 5,6,5:32,6:32).
#include "recipe_instances.hpp"  // first: the recipe classes are compiled in qtl_recipe_instances
#include <CLI/CLI.hpp>
#include "data_path.hpp"
#include <qtl/model/eval.hpp>
#include <qtl/model/finetune.hpp>
#include <qtl/model/mixed_precision.hpp>
#include <qtl/model/recipes.hpp>
#include <qtl/model/sequential.hpp>
#include <qtl/model/tokenizer.hpp>
#include <qtl/model/transformer.hpp>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct Range {
  int begin = 0, end = 0;  // [begin, end]
};

// "FIRST-LAST", both story indices counted from 0, FIRST <= LAST. Each way to get it wrong has
// its own message: a shape error only when the text is not of that shape.
Range parse_range(const std::string& s, std::string_view what) {
  Range r;
  char dash = 0;
  std::istringstream in(s);
  if (!(in >> r.begin >> dash >> r.end) || dash != '-' || in.peek() != std::char_traits<char>::eof()) {
    qtl::fail("quantize_model: ", what, " takes a story range FIRST-LAST such as 0-249, got '", s, "'");
  }
  if (r.begin < 0) qtl::fail("quantize_model: ", what, " ", s, ": the first story must be >= 0, got ", r.begin);
  if (r.end < r.begin) {
    qtl::fail("quantize_model: ", what, " ", s, ": the first story (", r.begin, ") comes after the last (", r.end,
              "); write the lower index first, e.g. ", r.end, "-", r.begin);
  }
  return r;
}

std::vector<std::string> slice(const std::vector<std::string>& stories, Range r, std::string_view what) {
  if (r.end >= static_cast<int>(stories.size())) {
    qtl::fail("quantize_model: ", what, " range ", r.begin, "-", r.end, " exceeds the ", stories.size(),
              " stories of the text");
  }
  return {stories.begin() + r.begin, stories.begin() + r.end + 1};
}

struct Result {
  std::string recipe;  // bits = 0: a mixed-precision allocation
  int bits = 0;
  double bpw = 0, ppl = 0, kl = 0, quant_seconds = 0, tokens_per_second = 0;
};

/// "RECIPE:BITS[:GROUP]" -> a candidate precision built by that recipe (group 0 = per row);
/// "BITS[:GROUP]" -> one built by the row's own recipe (e.g. 5 or 6:32, widths beyond the default
/// candidates).
qtl::model::Precision parse_candidate(const std::string& text) {
  const bool own = !text.empty() && std::isdigit(static_cast<unsigned char>(text[0]));
  const auto a = own ? std::string::size_type{0} : text.find(':');
  const auto b = own ? text.find(':') : a == std::string::npos ? a : text.find(':', a + 1);
  qtl::model::Precision p;
  try {
    if (!own && (a == 0 || a == std::string::npos)) throw std::invalid_argument("no recipe");
    if (!own) p.recipe = text.substr(0, a);
    std::size_t used = 0;
    const auto bits_begin = own ? 0 : a + 1;
    const std::string bits = text.substr(bits_begin, b == std::string::npos ? std::string::npos : b - bits_begin);
    p.bits = std::stoi(bits, &used);
    if (used != bits.size()) throw std::invalid_argument("bits");
    p.group = 0;
    if (b != std::string::npos) {
      const std::string group = text.substr(b + 1);
      p.group = std::stoll(group, &used);
      if (used != group.size() || p.group < 0) throw std::invalid_argument("group");
    }
  } catch (const std::logic_error&) {
    qtl::fail("--candidates: '", text, "' is not [RECIPE:]BITS[:GROUP] (e.g. gptaq-e8p:2, gptq-refine:3:32 or 5:32)");
  }
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Quantize a llama2.c model layer by layer and report perplexity, KL and speed"};
  std::string model_path, tokenizer_path, text_path, calib = "0-249", eval = "250-499", out;
  std::vector<std::string> recipe_names{"rtn", "gptq", "awq"};
  std::vector<int> bits{3};
  int group = 32, threads = 2;
  double damp = 0.01;
  bool int8 = false;
  std::vector<double> budgets;
  int sensitivity_stories = 32;
  bool linear_sensitivity = false;
  std::vector<std::string> candidate_specs;
  std::string sensitivity_recipe;
  bool finetune = false;
  bool finetune_scales = false;
  int finetune_steps = 300;
  double finetune_lr = 1e-3;
  double finetune_scale_lr = 1e-3;
  app.add_option("--model", model_path, "llama2.c checkpoint (default: bundled stories260K)");
  app.add_option("--tokenizer", tokenizer_path, "llama2.c tokenizer (default: bundled tok512.bin)");
  app.add_option("--text", text_path, "stories separated by <|endoftext|> lines (default: bundled dev text)");
  app.add_option("--calib", calib, "calibration stories, FIRST-LAST");
  app.add_option("--eval", eval, "evaluation stories, FIRST-LAST");
  std::string recipe_help = "recipes, comma-separated:";
  for (const auto& r : qtl::model::recipes()) recipe_help += qtl::str_cat("\n  ", r.name, ": ", r.description);
  app.add_option("--recipe", recipe_names, recipe_help)->delimiter(',');
  app.add_option("--bits", bits, "bit widths, comma-separated")->delimiter(',');
  app.add_option("--group", group, "inputs per quantization group; 0 = per row")->check(CLI::Range(0, 1 << 20));
  app.add_option("--damp", damp, "GPTQ damping, fraction of the Hessian's mean diagonal (gptq.py --percdamp)")
      ->check(CLI::Range(0.0, 10.0));
  app.add_option("--threads", threads, "threads for evaluation")->check(CLI::Range(1, 256));
  app.add_flag("--int8-activations", int8, "run the quantized layers with int8 activations (W·A8: uniform, table and E8P kernels)");
  app.add_option("--bpw", budgets, "mixed precision: bits-per-weight budgets, comma-separated (see the file comment)")
      ->delimiter(',')
      ->check(CLI::Range(1.0, 16.0));
  app.add_option("--sensitivity-stories", sensitivity_stories,
                 "with --bpw: calibration stories the sensitivities are scored on (the first N)")
      ->check(CLI::Range(1, 100000));
  app.add_flag("--linear-sensitivity", linear_sensitivity,
               "with --bpw: HIGGS's linear model (one noise probe per matrix) instead of measuring every candidate");
  app.add_option("--candidates", candidate_specs,
                 "with --bpw: more candidates, [RECIPE:]BITS[:GROUP], comma-separated (e.g. gptaq-e8p:2, or 5,6 for "
                 "the recipe's own 5- and 6-bit codes per row)")
      ->delimiter(',');
  app.add_option("--sensitivity-recipe", sensitivity_recipe,
                 "with --bpw: the recipe that quantizes each matrix alone for its sensitivity (default: the recipe "
                 "itself; gptq-refine for block-wise recipes such as autoround)");
  app.add_flag("--finetune-norms", finetune,
               "also tune each quantized model's RMSNorm gains end to end to the fp32 model's outputs (row RECIPE+norms)");
  app.add_option("--finetune-steps", finetune_steps, "with --finetune-norms: Adam steps")->check(CLI::Range(0, 1000000));
  app.add_option("--finetune-lr", finetune_lr, "with --finetune-norms: Adam's step size on the gain multipliers")
      ->check(CLI::Range(1e-6, 1.0));
  app.add_flag("--finetune-scales", finetune_scales,
               "also tune the gains and the group scales of the uniform codes end to end (row RECIPE+scales)");
  app.add_option("--finetune-scale-lr", finetune_scale_lr,
                 "with --finetune-scales: Adam's step size on the scale multipliers")
      ->check(CLI::Range(1e-6, 1.0));
  app.add_option("--out", out, "also write the table to OUT.md and OUT.csv");
  CLI11_PARSE(app, argc, argv);

  // Parallelism comes from scoring stories on separate threads; Eigen's own OpenMP threads on
  // top of them (for products of a few hundred rows) would only contend for the same cores.
  Eigen::setNbThreads(1);
  try {
    namespace m = qtl::model;
    auto pick = [](const std::string& given, std::string_view bundled) {
      return given.empty() ? qtl::io::require_data_file(bundled) : std::filesystem::path(given);
    };
    const m::Transformer fp32 = m::Transformer::load(pick(model_path, "stories260K/stories260K.bin"));
    const m::Tokenizer tokenizer = m::Tokenizer::load(pick(tokenizer_path, "stories260K/tok512.bin"));
    tokenizer.require_vocab_size(fp32.config().vocab_size);
    const auto stories = m::load_stories(pick(text_path, "tinystories_val_dev.txt"));
    std::vector<m::Precision> extra_candidates;
    for (const auto& c : candidate_specs) extra_candidates.push_back(parse_candidate(c));
    // Every candidate's recipe and width are checked before anything is quantized (make_recipe
    // refuses a width its codes have no kernel for): a recipe's own widths against each recipe
    // that may build them.
    for (const auto& c : extra_candidates) {
      std::vector<std::string> builders = recipe_names;
      if (!sensitivity_recipe.empty()) builders.push_back(sensitivity_recipe);
      if (!c.recipe.empty()) builders = {c.recipe};
      for (const auto& name : builders) (void)m::make_recipe({.name = name, .bits = c.bits, .group = c.group});
    }
    const auto calib_stories = slice(stories, parse_range(calib, "--calib"), "--calib");
    const auto eval_stories = slice(stories, parse_range(eval, "--eval"), "--eval");

    std::vector<std::vector<int>> calibration;
    for (const auto& s : calib_stories) {
      auto enc = m::encode_story(tokenizer, s, fp32.config().seq_len).ids;
      if (enc.size() > static_cast<std::size_t>(fp32.config().seq_len)) enc.resize(fp32.config().seq_len);
      calibration.push_back(std::move(enc));
    }
    m::EvalOptions eval_opt;
    eval_opt.threads = threads;

    // Speed is measured on its own pass over the first stories of the evaluation set (the KL
    // evaluation also runs the fp32 reference, so its time says nothing about the model).
    const std::vector<std::string> speed_stories(eval_stories.begin(),
                                                 eval_stories.begin() + std::min<std::size_t>(25, eval_stories.size()));
    auto tokens_per_second = [&](const m::Transformer& model) {
      const auto t0 = std::chrono::steady_clock::now();
      const auto r = m::perplexity(model, tokenizer, speed_stories, eval_opt);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      return static_cast<double>(r.tokens_scored) / s;
    };
    std::cerr << "fp32: evaluating " << eval_stories.size() << " stories...\n";
    const auto base = m::perplexity(fp32, tokenizer, eval_stories, eval_opt);
    if (base.stories_truncated > 0) {
      std::cerr << "note: " << base.stories_truncated << " evaluation stories were truncated to seq_len + 1 = "
                << fp32.config().seq_len + 1 << " tokens (" << base.tokens_dropped << " tokens not scored)\n";
    }

    std::vector<Result> results;
    results.push_back({"fp32", 32, 32.0, base.perplexity, 0.0, 0.0, tokens_per_second(fp32)});
    // With --finetune-norms: the same model with its gains tuned end to end, as a row of its own.
    // With --finetune-scales: gains and the uniform codes' group scales, another row.
    auto add_finetuned = [&](const m::Transformer& q, const std::string& label, int b, double bpw, double seconds) {
      for (const bool scales : {false, true}) {
        if (!(scales ? finetune_scales : finetune)) continue;
        m::Transformer tuned = q;
        m::FinetuneOptions fo;
        fo.iterations = finetune_steps;
        fo.learning_rate = finetune_lr;
        fo.threads = threads;
        fo.scales = scales;
        fo.scale_learning_rate = finetune_scale_lr;
        const auto t0 = std::chrono::steady_clock::now();
        const auto rep = m::finetune_model(fp32, tuned, calibration, fo);
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        const auto r = m::kl_divergence(fp32, tuned, tokenizer, eval_stories, eval_opt);
        const std::string row = label + (scales ? "+scales" : "+norms");
        results.push_back({row, b, bpw, r.perplexity, r.mean_kl, seconds + s, tokens_per_second(tuned)});
        std::cerr << row << ": calibration KL " << rep.start_kl << " -> " << rep.final_kl << " (step "
                  << rep.best_iteration << "), perplexity " << r.perplexity << "\n";
      }
    };
    for (const auto& name : recipe_names) {
      for (int b : bits) {
        m::RecipeSpec spec;
        spec.name = name;
        spec.bits = b;
        spec.group = group;
        spec.damp = damp;
        spec.kernel.activations = int8 ? qtl::kernel::ActivationMode::Int8 : qtl::kernel::ActivationMode::Fp32;
        const auto recipe = m::make_recipe(spec);
        m::SequentialOptions seq;
        seq.progress = [](std::string_view line) { std::cerr << line << '\n'; };
        m::SequentialReport report;
        const m::Transformer q = m::quantize_sequential(fp32, calibration, *recipe, seq, &report);
        std::cerr << name << " " << b << "-bit: evaluating...\n";
        const auto r = m::kl_divergence(fp32, q, tokenizer, eval_stories, eval_opt);
        results.push_back({name, b, report.bits_per_weight(), r.perplexity, r.mean_kl, report.seconds,
                           tokens_per_second(q)});
        std::cerr << name << " " << b << "-bit: perplexity " << r.perplexity << " (fp32 " << base.perplexity
                  << "), KL " << r.mean_kl << ", " << report.bits_per_weight() << " bits/weight\n";
        add_finetuned(q, name, b, report.bits_per_weight(), report.seconds);
      }
    }

    std::ostringstream notes;
    for (const auto& name : budgets.empty() ? std::vector<std::string>{} : recipe_names) {
      const bool block_wise = m::make_recipe({.name = name})->quantizes_blocks();
      const std::string sens_name = !sensitivity_recipe.empty() ? sensitivity_recipe : block_wise ? "gptq-refine" : name;
      // The recipe that quantizes one matrix at precision p: `own` unless p names another.
      auto factory = [&](const std::string& own) {
        return [&, own](const m::Precision& p) {
          m::RecipeSpec spec;
          spec.name = p.recipe.empty() ? own : p.recipe;
          spec.bits = p.bits;
          spec.group = p.group;
          spec.damp = damp;
          spec.kernel.activations = int8 ? qtl::kernel::ActivationMode::Int8 : qtl::kernel::ActivationMode::Fp32;
          return m::make_recipe(spec);
        };
      };
      const auto make = factory(sens_name);
      m::SensitivityOptions so;
      so.threads = threads;
      so.linear_model = linear_sensitivity;
      for (const auto& c : extra_candidates) so.candidates.push_back(c);
      so.progress = [](std::string_view line) { std::cerr << line << '\n'; };
      const std::size_t n_scoring = std::min<std::size_t>(static_cast<std::size_t>(sensitivity_stories), calibration.size());
      std::vector<std::vector<int>> scoring;
      for (std::size_t i = 0; i < n_scoring; ++i) {
        if (calibration[i].size() >= 2) scoring.push_back(calibration[i]);
      }
      const auto t0 = std::chrono::steady_clock::now();
      const auto table = m::measure_sensitivity(fp32, calibration, scoring, so, make);
      const double sens_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::string label = name + (linear_sensitivity ? "-mixed-linear" : "-mixed");
      // e.g. gptaq-refine-mixed+5bit+6bit+gptaq-e8p: each extra width and other recipe once
      std::vector<std::string> tags;
      for (const auto& c : extra_candidates) {
        const std::string tag = c.recipe.empty() ? std::to_string(c.bits) + "bit" : c.recipe;
        if (std::find(tags.begin(), tags.end(), tag) == tags.end()) tags.push_back(tag);
      }
      for (const auto& tag : tags) label += "+" + tag;
      for (double b : budgets) {
        const auto plan = m::allocate_bits(table, b);
        // Layer by layer, each matrix by `name` at its precision; or one block-wise recipe over
        // the allocated precisions.
        std::unique_ptr<m::Recipe> recipe;
        if (block_wise) {
          m::RecipeSpec spec;
          spec.name = name;
          spec.kernel.activations = int8 ? qtl::kernel::ActivationMode::Int8 : qtl::kernel::ActivationMode::Fp32;
          spec.precisions = m::precisions_of(table, plan);
          recipe = m::make_recipe(spec);
        } else {
          recipe = std::make_unique<m::MixedPrecisionRecipe>(label, table, plan, factory(name));
        }
        m::SequentialOptions seq;
        seq.progress = [](std::string_view line) { std::cerr << line << '\n'; };
        m::SequentialReport report;
        const m::Transformer q = m::quantize_sequential(fp32, calibration, *recipe, seq, &report);
        const auto r = m::kl_divergence(fp32, q, tokenizer, eval_stories, eval_opt);
        results.push_back({label, 0, report.bits_per_weight(), r.perplexity, r.mean_kl,
                           report.seconds + sens_seconds, tokens_per_second(q)});
        add_finetuned(q, label, 0, report.bits_per_weight(), report.seconds + sens_seconds);
        std::map<std::string, int> counts;
        for (std::size_t i = 0; i < plan.choice.size(); ++i) counts[m::to_string(table.candidates[plan.choice[i]])]++;
        notes << "\n" << label << " at <= " << b << " bits/weight: " << report.bits_per_weight()
              << " bits/weight; predicted perplexity " << base.perplexity * std::exp(plan.predicted_delta_nll)
              << " (fp32 " << base.perplexity << " x exp(sum of the matrices' NLL changes on "
              << table.scored_tokens << " calibration tokens)), measured " << r.perplexity
              << "; sensitivity pass (" << sens_name << ") " << sens_seconds << " s\n  matrices:";
        for (const auto& [label, n] : counts) notes << " " << n << " at " << label << ";";
        notes << "\n  per matrix:";
        for (std::size_t i = 0; i < plan.choice.size(); ++i) {
          const auto& p = table.candidates[plan.choice[i]];
          notes << " " << table.matrices[i].name.substr(7) << "=" << (p.recipe.empty() ? "" : p.recipe + ":") << p.bits
                << (p.group == 0 ? "r" : "g");
        }
        notes << "\n";
        std::cerr << label << " " << b << ": perplexity " << r.perplexity << ", " << report.bits_per_weight()
                  << " bits/weight\n";
      }
    }

    std::ostringstream md, csv;
    md << "| recipe | bits | bits/weight | perplexity | ΔPPL vs fp32 | KL (nats) | quant. time (s) | tokens/s |\n"
       << "|---|---|---|---|---|---|---|---|\n";
    csv << "recipe,bits,bits_per_weight,perplexity,delta_ppl,kl,quant_seconds,tokens_per_second\n";
    char line[512];
    for (const auto& r : results) {
      const std::string bits_label = r.bits == 0 ? std::string("mixed") : std::to_string(r.bits);
      std::snprintf(line, sizeof line, "| %s | %s | %.3f | %.4f | %+.4f | %.5f | %.2f | %.0f |\n", r.recipe.c_str(),
                    bits_label.c_str(), r.bpw, r.ppl, r.ppl - base.perplexity, r.kl, r.quant_seconds, r.tokens_per_second);
      md << line;
      std::snprintf(line, sizeof line, "%s,%d,%.4f,%.6f,%.6f,%.6f,%.3f,%.1f\n", r.recipe.c_str(), r.bits, r.bpw,
                    r.ppl, r.ppl - base.perplexity, r.kl, r.quant_seconds, r.tokens_per_second);
      csv << line;
    }
    std::cout << "stories260K, calibration stories " << calib << ", evaluation stories " << eval << " ("
              << base.tokens_scored << " tokens), group " << (group == 0 ? std::string("per row") : std::to_string(group))
              << ", " << (int8 ? "int8" : "fp32") << " activations; tokens/s: prompt processing of the first "
              << speed_stories.size() << " evaluation stories on " << threads << " thread(s)\n\n"
              << md.str() << notes.str();
    if (!out.empty()) {
      for (const auto& [ext, text] : {std::pair<std::string, std::string>{".md", md.str()}, {".csv", csv.str()}}) {
        const std::filesystem::path final_path = out + ext, tmp = out + ext + ".tmp";
        {
          std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
          f << text;
          if (!f.flush()) qtl::fail("quantize_model: cannot write '", tmp.string(), "'");
        }
        std::filesystem::rename(tmp, final_path);
      }
    }
  } catch (const qtl::Error& e) {
    std::cerr << "quantize_model: " << e.what() << '\n';
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "quantize_model: " << e.what() << '\n';
    return 1;
  }
  return 0;
}

// qtl/model/eval.hpp — perplexity and KL divergence on stories, as ../shared/data/README.md
// defines them.
//
// Stories: the text between lines holding exactly "<|endoftext|>"; inside a story, empty lines
// are dropped and the remaining lines joined with single '\n's (so "a\n\nb\n" becomes "a\nb":
// no blank lines, no trailing newline). A trailing '\r' on a line is removed.
// Scoring: each story is encoded on its own as BOS + text, truncated to seq_len + 1 tokens, and
// every next-token prediction is scored: tokens x_0..x_n (n <= seq_len) give n predictions
//   nll_t = −log softmax(z_t)[x_{t+1}],   z_t = logits after x_0..x_t,  t = 0..n−1.
// mean NLL = Σ nll_t / N over all positions of all stories (N tokens scored), ppl = exp(mean).
// KL of a model Q against a reference P, both run on the same tokens, per position t:
//   KL_t = Σ_v p_t(v) (log p_t(v) − log q_t(v)),  reported as the mean over all N positions.
// Stories longer than seq_len + 1 tokens are cut, never rejected: the result counts them.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "qtl/core/error.hpp"
#include "qtl/kernel/common/threading.hpp"
#include "qtl/model/tokenizer.hpp"
#include "qtl/model/transformer.hpp"

namespace qtl::model {

/// The separator line between stories in the dev text.
inline constexpr std::string_view kStorySeparator = "<|endoftext|>";

/// Splits text into stories by the rule at the top of this header. Chunks with no non-empty
/// line (e.g. after a trailing separator) are not stories and are skipped.
[[nodiscard]] inline std::vector<std::string> split_stories(std::string_view text) {
  std::vector<std::string> stories;
  std::string current;
  auto finish = [&]() {
    if (!current.empty()) stories.push_back(std::move(current));
    current.clear();
  };
  std::size_t begin = 0;
  while (begin <= text.size()) {
    std::size_t end = text.find('\n', begin);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(begin, end - begin);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line == kStorySeparator) {
      finish();
    } else if (!line.empty()) {
      if (!current.empty()) current += '\n';
      current += line;
    }
    begin = end + 1;
  }
  finish();
  return stories;
}

/// Reads a text file and splits it with split_stories. Throws qtl::Error when the path does
/// not exist, is a folder, cannot be read, is empty, or holds no story, saying which.
[[nodiscard]] inline std::vector<std::string> load_stories(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) fail("load_stories: text file '", path.string(), "' not found");
  if (std::filesystem::is_directory(path, ec)) {
    fail("load_stories: '", path.string(), "' is a folder, not a text file");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("load_stories: cannot open '", path.string(), "' for reading");
  const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  if (in.bad()) fail("load_stories: reading '", path.string(), "' failed");
  if (text.empty()) {
    fail("load_stories: text file '", path.string(), "' is empty (expected stories separated by "
         "<|endoftext|> lines)");
  }
  std::vector<std::string> stories = split_stories(text);
  if (stories.empty()) {
    fail("load_stories: '", path.string(), "' (", text.size(), " bytes) holds no story: only "
         "whitespace and <|endoftext|> separators");
  }
  return stories;
}

/// One story's tokens, ready for scoring.
struct EncodedStory {
  std::vector<int> ids;             // BOS + text, at most seq_len + 1 tokens
  std::size_t tokens_dropped = 0;   // tokens cut off the end to fit seq_len + 1
  [[nodiscard]] bool truncated() const { return tokens_dropped > 0; }
};

/// BOS + encode(story), truncated to seq_len + 1 tokens. Throws qtl::Error on an empty story
/// (it has nothing to score) or seq_len < 1.
[[nodiscard]] inline EncodedStory encode_story(const Tokenizer& tokenizer, std::string_view story,
                                               int seq_len) {
  if (seq_len < 1) fail("encode_story: seq_len must be >= 1, got ", seq_len);
  if (story.empty()) fail("encode_story: the story is empty; there is no token to predict");
  EncodedStory out;
  out.ids = tokenizer.encode(story, /*bos=*/true);
  const auto limit = static_cast<std::size_t>(seq_len) + 1;
  if (out.ids.size() > limit) {
    out.tokens_dropped = out.ids.size() - limit;
    out.ids.resize(limit);
  }
  return out;
}

struct EvalOptions {
  /// Stories are scored in parallel on this many threads (>= 1), with qtl::kernel::parallel_for
  /// (an OpenMP region when built with OpenMP: Eigen's GEMMs inside then run single-threaded).
  /// Sums are reduced in story order, so results do not depend on it. With an observer
  /// installed on a model, use 1 unless the observer is thread-safe.
  int threads = 1;
};

struct EvalResult {
  double mean_nll = 0.0;         // nats per scored token
  double perplexity = 0.0;       // exp(mean_nll)
  /// Mean KL(reference || model) in nats per position; NaN when no reference was given.
  double mean_kl = std::numeric_limits<double>::quiet_NaN();
  std::int64_t tokens_scored = 0;
  int stories = 0;
  int stories_truncated = 0;     // stories cut to seq_len + 1 tokens
  std::int64_t tokens_dropped = 0;
};

namespace detail {

/// log Σ_v exp(z_v), in double.
inline double log_sum_exp(const Eigen::Ref<const Eigen::RowVectorXf>& z) {
  double max_value = z(0);
  for (Index v = 1; v < z.size(); ++v) max_value = std::max(max_value, static_cast<double>(z(v)));
  double sum = 0.0;
  for (Index v = 0; v < z.size(); ++v) sum += std::exp(static_cast<double>(z(v)) - max_value);
  return max_value + std::log(sum);
}

struct StoryScore {
  double nll_sum = 0.0;
  double kl_sum = 0.0;
  std::int64_t positions = 0;
  std::size_t tokens_dropped = 0;
};

inline StoryScore score_story(const Transformer& model, const Transformer* reference,
                              const Tokenizer& tokenizer, std::string_view story, int seq_len) {
  const EncodedStory enc = encode_story(tokenizer, story, seq_len);
  StoryScore s;
  s.tokens_dropped = enc.tokens_dropped;
  const std::size_t n = enc.ids.size() - 1;  // predictions
  if (n == 0) return s;
  const std::span<const int> inputs(enc.ids.data(), n);
  const RowMatrixXf logits = model.forward(inputs);
  RowMatrixXf ref_logits;
  if (reference != nullptr) ref_logits = reference->forward(inputs);
  for (std::size_t t = 0; t < n; ++t) {
    const auto row = static_cast<Index>(t);
    const double lse = log_sum_exp(logits.row(row));
    s.nll_sum += lse - static_cast<double>(logits(row, enc.ids[t + 1]));
    if (reference != nullptr) {
      const double ref_lse = log_sum_exp(ref_logits.row(row));
      double kl = 0.0;
      for (Index v = 0; v < logits.cols(); ++v) {
        const double log_p = static_cast<double>(ref_logits(row, v)) - ref_lse;
        const double log_q = static_cast<double>(logits(row, v)) - lse;
        kl += std::exp(log_p) * (log_p - log_q);
      }
      s.kl_sum += kl;
    }
  }
  s.positions = static_cast<std::int64_t>(n);
  return s;
}

}  // namespace detail

/// Perplexity of `model` on `stories` and, when `reference` is given, the mean KL divergence
/// of the model's next-token distribution from the reference's. Throws qtl::Error when there
/// are no stories, a story is empty (its index is named), or the tokenizer's or reference's
/// vocabulary differs from the model's.
[[nodiscard]] inline EvalResult evaluate(const Transformer& model, const Tokenizer& tokenizer,
                                         std::span<const std::string> stories,
                                         const Transformer* reference = nullptr,
                                         const EvalOptions& options = {}) {
  const int vocab = model.config().vocab_size;
  tokenizer.require_vocab_size(vocab);
  if (reference != nullptr && reference->config().vocab_size != vocab) {
    fail("evaluate: the reference model's vocab_size is ", reference->config().vocab_size,
         " but the model's is ", vocab);
  }
  if (stories.empty()) fail("evaluate: no stories to score");
  require_range("evaluate", "options.threads", options.threads, 1, 1024);
  // A reference with a shorter context would see different truncation: score the common part.
  const int seq_len = reference != nullptr
                          ? std::min(model.config().seq_len, reference->config().seq_len)
                          : model.config().seq_len;
  for (std::size_t i = 0; i < stories.size(); ++i) {
    if (stories[i].empty()) fail("evaluate: story ", i, " is empty; there is no token to predict");
  }

  // Stories are independent: score them in parallel, each into its own slot, then reduce in
  // story order so that the sums do not depend on the thread count.
  std::vector<detail::StoryScore> scores(stories.size());
  std::vector<std::exception_ptr> errors(stories.size());
  kernel::parallel_for(static_cast<std::ptrdiff_t>(stories.size()), options.threads,
                       [&](std::ptrdiff_t begin, std::ptrdiff_t end) {
                         for (auto i = static_cast<std::size_t>(begin);
                              i < static_cast<std::size_t>(end); ++i) {
                           try {
                             scores[i] = detail::score_story(model, reference, tokenizer,
                                                             stories[i], seq_len);
                           } catch (...) {
                             errors[i] = std::current_exception();
                             return;
                           }
                         }
                       });
  for (const auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }

  EvalResult r;
  double nll_sum = 0.0, kl_sum = 0.0;
  for (const auto& s : scores) {
    nll_sum += s.nll_sum;
    kl_sum += s.kl_sum;
    r.tokens_scored += s.positions;
    r.tokens_dropped += static_cast<std::int64_t>(s.tokens_dropped);
    r.stories_truncated += s.tokens_dropped > 0 ? 1 : 0;
  }
  r.stories = static_cast<int>(stories.size());
  r.mean_nll = nll_sum / static_cast<double>(r.tokens_scored);
  r.perplexity = std::exp(r.mean_nll);
  if (reference != nullptr) r.mean_kl = kl_sum / static_cast<double>(r.tokens_scored);
  return r;
}

/// evaluate() without a reference: mean NLL and perplexity.
[[nodiscard]] inline EvalResult perplexity(const Transformer& model, const Tokenizer& tokenizer,
                                           std::span<const std::string> stories,
                                           const EvalOptions& options = {}) {
  return evaluate(model, tokenizer, stories, nullptr, options);
}

/// Mean KL(reference || model) per scored position (also fills the model's perplexity).
[[nodiscard]] inline EvalResult kl_divergence(const Transformer& reference,
                                              const Transformer& model,
                                              const Tokenizer& tokenizer,
                                              std::span<const std::string> stories,
                                              const EvalOptions& options = {}) {
  return evaluate(model, tokenizer, stories, &reference, options);
}

}  // namespace qtl::model

#include "qtl/model/transformer.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "model/eigen_single_thread.hpp"
#include "data_path.hpp"
#include "qtl/io/llama2c.hpp"
#include "qtl/model/tokenizer.hpp"
#include "test_util.hpp"

namespace {

using qtl::Index;
using qtl::RowMatrixXf;
using qtl::io::Llama2cCheckpoint;
using qtl::model::DenseLinear;
using qtl::model::KvCache;
using qtl::model::LinearOp;
using qtl::model::Transformer;

const Llama2cCheckpoint& checkpoint() {
  static const Llama2cCheckpoint ck =
      Llama2cCheckpoint::load(qtl::io::data_path("stories260K/stories260K.bin"));
  return ck;
}

std::vector<int> story_tokens(std::size_t n) {
  static const auto tok =
      qtl::model::Tokenizer::load(qtl::io::data_path("stories260K/tok512.bin"));
  auto ids = tok.encode(
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
      "park. One day, she saw a big red ball under a tree. She ran to get it, but a dog got there "
      "first. The dog wagged its tail and dropped the ball at her feet. Lily laughed and threw "
      "the ball far away, and the dog ran after it. They played all afternoon.");
  EXPECT_GE(ids.size(), n);
  ids.resize(n);
  return ids;
}

/// Max |a - b| over all entries.
double max_abs_diff(const RowMatrixXf& a, const RowMatrixXf& b) {
  EXPECT_EQ(a.rows(), b.rows());
  EXPECT_EQ(a.cols(), b.cols());
  return static_cast<double>((a - b).cwiseAbs().maxCoeff());
}

/// The llama2.c forward pass written independently of transformer.hpp: one token at a time,
/// matrix-vector products in double, a plain key/value history. Returns logits [T x vocab].
std::vector<std::vector<double>> reference_logits(const Llama2cCheckpoint& ck,
                                                  const std::vector<int>& tokens) {
  const auto& c = ck.config();
  const int d = c.dim, hs = c.head_size(), kv = c.kv_dim();
  using Vec = std::vector<double>;
  auto matvec = [](const qtl::MatrixMap& w, const Vec& x) {
    Vec y(static_cast<std::size_t>(w.rows()), 0.0);
    for (Index r = 0; r < w.rows(); ++r) {
      for (Index k = 0; k < w.cols(); ++k) y[r] += static_cast<double>(w(r, k)) * x[k];
    }
    return y;
  };
  auto rmsnorm = [](const Vec& x, const qtl::MatrixMap& g) {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double inv = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + 1e-5);
    Vec y(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) y[i] = x[i] * inv * g(0, static_cast<Index>(i));
    return y;
  };
  auto rope = [&](Vec& v, int pos) {
    for (std::size_t i = 0; i < v.size(); i += 2) {
      const int pair_in_head = static_cast<int>(i % static_cast<std::size_t>(hs)) / 2;
      const double theta = pos * std::pow(10000.0, -2.0 * pair_in_head / hs);
      const double a = v[i], b = v[i + 1];
      v[i] = a * std::cos(theta) - b * std::sin(theta);
      v[i + 1] = a * std::sin(theta) + b * std::cos(theta);
    }
  };
  std::vector<std::vector<Vec>> keys(static_cast<std::size_t>(c.n_layers));
  std::vector<std::vector<Vec>> values(static_cast<std::size_t>(c.n_layers));
  std::vector<Vec> out;
  const auto emb = ck.tensor("tok_embeddings");
  for (std::size_t pos = 0; pos < tokens.size(); ++pos) {
    Vec x(static_cast<std::size_t>(d));
    for (int i = 0; i < d; ++i) x[i] = emb(tokens[pos], i);
    for (int l = 0; l < c.n_layers; ++l) {
      const std::string p = qtl::str_cat("layers.", l, ".");
      const Vec xn = rmsnorm(x, ck.tensor(p + "attention_norm"));
      Vec q = matvec(ck.tensor(p + "wq"), xn);
      Vec k = matvec(ck.tensor(p + "wk"), xn);
      const Vec v = matvec(ck.tensor(p + "wv"), xn);
      rope(q, static_cast<int>(pos));
      rope(k, static_cast<int>(pos));
      keys[l].push_back(k);
      values[l].push_back(v);
      Vec att(static_cast<std::size_t>(d), 0.0);
      for (int h = 0; h < c.n_heads; ++h) {
        const int g = h * c.n_kv_heads / c.n_heads;
        Vec w(pos + 1);
        double mx = -1e300;
        for (std::size_t t = 0; t <= pos; ++t) {
          double s = 0;
          for (int i = 0; i < hs; ++i) s += q[h * hs + i] * keys[l][t][g * hs + i];
          w[t] = s / std::sqrt(static_cast<double>(hs));
          mx = std::max(mx, w[t]);
        }
        double sum = 0;
        for (double& e : w) sum += (e = std::exp(e - mx));
        for (std::size_t t = 0; t <= pos; ++t) {
          for (int i = 0; i < hs; ++i) att[h * hs + i] += w[t] / sum * values[l][t][g * hs + i];
        }
      }
      const Vec o = matvec(ck.tensor(p + "wo"), att);
      for (int i = 0; i < d; ++i) x[i] += o[i];
      const Vec xf = rmsnorm(x, ck.tensor(p + "ffn_norm"));
      Vec a = matvec(ck.tensor(p + "w1"), xf);
      const Vec b = matvec(ck.tensor(p + "w3"), xf);
      for (std::size_t i = 0; i < a.size(); ++i) a[i] = a[i] / (1.0 + std::exp(-a[i])) * b[i];
      const Vec f = matvec(ck.tensor(p + "w2"), a);
      for (int i = 0; i < d; ++i) x[i] += f[i];
      (void)kv;
    }
    out.push_back(matvec(emb, rmsnorm(x, ck.tensor("norm"))));
  }
  return out;
}

/// A LinearOp that wraps another and counts its calls: shows the interface from outside.
class CountingLinear final : public LinearOp {
 public:
  CountingLinear(std::unique_ptr<LinearOp> inner, std::shared_ptr<int> calls)
      : inner_(std::move(inner)), calls_(std::move(calls)) {}
  CountingLinear(const CountingLinear& o)
      : LinearOp(o), inner_(o.inner_->clone()), calls_(o.calls_) {}
  Index in_features() const override { return inner_->in_features(); }
  Index out_features() const override { return inner_->out_features(); }
  RowMatrixXf forward(qtl::MatrixRef x) const override {
    ++*calls_;
    return inner_->forward(x);
  }
  std::unique_ptr<LinearOp> clone() const override {
    return std::make_unique<CountingLinear>(*this);
  }
  std::string describe() const override { return "counting " + inner_->describe(); }

 private:
  std::unique_ptr<LinearOp> inner_;
  std::shared_ptr<int> calls_;
};

using qtl::test::error_of;

class ModelTransformer : public qtl::test::EigenSingleThread {};

TEST_F(ModelTransformer, MatchesIndependentDoubleReference) {
  const Transformer model(checkpoint());
  const auto tokens = story_tokens(24);
  const RowMatrixXf logits = model.forward(tokens);
  const auto ref = reference_logits(checkpoint(), tokens);
  ASSERT_EQ(logits.rows(), 24);
  ASSERT_EQ(logits.cols(), 512);
  double worst = 0;
  for (Index t = 0; t < logits.rows(); ++t) {
    for (Index v = 0; v < logits.cols(); ++v) {
      worst = std::max(worst, std::abs(static_cast<double>(logits(t, v)) - ref[t][v]));
    }
  }
  EXPECT_LT(worst, 2e-3) << "fp32 logits vs double reference";
}

TEST_F(ModelTransformer, KvCacheStepsEqualBatchedForward) {
  const Transformer model(checkpoint());
  const auto tokens = story_tokens(80);
  const RowMatrixXf batched = model.forward(tokens);

  KvCache cache(model.config());
  RowMatrixXf stepped(80, 512);
  for (int t = 0; t < 80; ++t) {
    EXPECT_EQ(cache.size(), t);
    stepped.row(t) = model.step(tokens[static_cast<std::size_t>(t)], cache).transpose();
  }
  EXPECT_EQ(cache.size(), 80);
  EXPECT_LT(max_abs_diff(batched, stepped), 1e-4);

  // A prompt prefilled in one batch, then continued in chunks, gives the same logits too.
  cache.clear();
  const std::span<const int> all(tokens);
  RowMatrixXf chunked(80, 512);
  chunked.topRows(50) = model.forward(all.subspan(0, 50), cache);
  chunked.middleRows(50, 7) = model.forward(all.subspan(50, 7), cache);
  for (int t = 57; t < 80; ++t) chunked.row(t) = model.step(tokens[t], cache).transpose();
  EXPECT_LT(max_abs_diff(batched, chunked), 1e-4);

  // forward_last: the last row of the same pass, and the same cache afterwards.
  KvCache last_cache(model.config());
  const qtl::VectorXf last = model.forward_last(all.subspan(0, 50), last_cache);
  EXPECT_EQ(last_cache.size(), 50);
  ASSERT_EQ(last.size(), 512);
  EXPECT_LT(max_abs_diff(batched.row(49), last.transpose()), 1e-4);
  EXPECT_LT(max_abs_diff(batched.row(50), model.step(tokens[50], last_cache).transpose()), 1e-4);
}

TEST_F(ModelTransformer, HalfPrecisionKvCacheRoundsKeysAndValuesOnce) {
  // An fp16 cache (llama.cpp's default) rounds each key and value once: logits stay within
  // fp16's rounding of the fp32 model's (relative 2^-11 per cached value), yet differ from them.
  // A prompt prefilled in a batch then stepped differs from steps alone by as little: the
  // batch's keys differ from the steps' in the last fp32 bits (GEMM against GEMV summation
  // order), which can flip a value's fp16 rounding.
  const Transformer model(checkpoint());
  const auto tokens = story_tokens(80);
  const RowMatrixXf batched = model.forward(tokens);
  KvCache cache(model.config(), qtl::model::KvType::F16);
  EXPECT_EQ(cache.type(), qtl::model::KvType::F16);
  RowMatrixXf stepped(80, 512);
  for (int t = 0; t < 80; ++t) stepped.row(t) = model.step(tokens[static_cast<std::size_t>(t)], cache).transpose();
  const double d = max_abs_diff(batched, stepped);
  EXPECT_GT(d, 1e-5);
  EXPECT_LT(d, 5e-2);  // logits are O(10); 0.019 here (GCC 12, AVX-512), 1e-4 with the fp32 cache
  cache.clear();
  const std::span<const int> all(tokens);
  RowMatrixXf chunked(80, 512);
  chunked.topRows(50) = model.forward(all.subspan(0, 50), cache);
  for (int t = 50; t < 80; ++t) chunked.row(t) = model.step(tokens[t], cache).transpose();
  EXPECT_LT(max_abs_diff(stepped, chunked), 5e-2);  // 0.0088 here (GCC 12, AVX-512)
  // A cache made for another config is refused, whatever its type.
  auto other = model.config();
  other.seq_len = 16;
  KvCache wrong(other, qtl::model::KvType::F16);
  EXPECT_THROW((void)model.step(tokens[0], wrong), qtl::Error);
}

TEST_F(ModelTransformer, AttentionHeadsSplitAcrossThreadsGiveTheSameLogits) {
  // The heads of a layer run on Eigen's thread count; a head's arithmetic does not depend on
  // the split, so 1 and 2 threads give the same bits (fp32 and fp16 caches, and no cache).
  const Transformer model(checkpoint());
  const auto tokens = story_tokens(24);
  const int saved = Eigen::nbThreads();
  RowMatrixXf out[2][3];
  for (int n = 1; n <= 2; ++n) {
    Eigen::setNbThreads(n);
    out[n - 1][0] = model.forward(tokens);
    int k = 1;
    for (const auto type : {qtl::model::KvType::F32, qtl::model::KvType::F16}) {
      KvCache cache(model.config(), type);
      out[n - 1][k] = RowMatrixXf(24, 512);
      for (int t = 0; t < 24; ++t) out[n - 1][k].row(t) = model.step(tokens[static_cast<std::size_t>(t)], cache).transpose();
      ++k;
    }
  }
  Eigen::setNbThreads(saved);
  for (int k = 0; k < 3; ++k) EXPECT_EQ(out[0][k], out[1][k]) << k;
}

TEST_F(ModelTransformer, CausalPrefixIsUnchangedByLaterTokens) {
  const Transformer model(checkpoint());
  const auto tokens = story_tokens(40);
  const RowMatrixXf full = model.forward(tokens);
  const RowMatrixXf prefix = model.forward(std::span<const int>(tokens).subspan(0, 25));
  // Equal up to float rounding (GEMM blocking depends on T): logits are O(10).
  EXPECT_LT(max_abs_diff(full.topRows(25), prefix), 1e-4);
}

TEST_F(ModelTransformer, LayerByLayerPiecesComposeToForward) {
  const Transformer model(checkpoint());
  const auto tokens = story_tokens(30);
  RowMatrixXf h = model.embed(tokens);
  EXPECT_EQ(h.row(3), checkpoint().tensor("tok_embeddings").row(tokens[3]));
  for (int l = 0; l < model.config().n_layers; ++l) model.forward_layer(l, h);
  EXPECT_EQ(max_abs_diff(model.logits(h), model.forward(tokens)), 0.0);
}

TEST_F(ModelTransformer, LinearNamesMatchCheckpoint) {
  const Transformer model(checkpoint());
  EXPECT_EQ(model.linear_names(), checkpoint().linear_names());
  for (const auto& name : model.linear_names()) {
    const LinearOp& op = model.linear(name);
    const auto w = checkpoint().tensor(name);
    EXPECT_EQ(op.out_features(), w.rows()) << name;
    EXPECT_EQ(op.in_features(), w.cols()) << name;
    const auto* dense = dynamic_cast<const DenseLinear*>(&op);
    ASSERT_NE(dense, nullptr) << name;
    EXPECT_TRUE(dense->weight() == w) << name;
  }
  EXPECT_EQ(model.linear("layers.0.w2").describe(), "dense fp32 64x172");
}

TEST_F(ModelTransformer, SetLinearReplacesTheLayer) {
  Transformer model(checkpoint());
  const auto tokens = story_tokens(16);
  const RowMatrixXf before = model.forward(tokens);

  auto calls = std::make_shared<int>(0);
  auto old = model.set_linear(
      "layers.2.w1", std::make_unique<CountingLinear>(model.linear("layers.2.w1").clone(), calls));
  ASSERT_NE(old, nullptr);
  EXPECT_EQ(old->describe(), "dense fp32 172x64");
  EXPECT_EQ(max_abs_diff(model.forward(tokens), before), 0.0);
  EXPECT_EQ(*calls, 1);  // one GEMM per linear per forward, however many tokens
  EXPECT_EQ(model.linear("layers.2.w1").describe(), "counting dense fp32 172x64");

  // Zeroing the attention output of layer 0 changes the logits.
  model.set_linear("layers.0.wo", std::make_unique<DenseLinear>(RowMatrixXf::Zero(64, 64)));
  EXPECT_GT(max_abs_diff(model.forward(tokens), before), 1e-2);

  // Copies clone the ops: the copy's counting op shares the counter but not the object.
  const Transformer copy = model;
  (void)copy.forward(tokens);
  EXPECT_EQ(*calls, 3);  // forward with wo zeroed, then the copy's forward
  EXPECT_EQ(copy.linear("layers.2.w1").describe(), "counting dense fp32 172x64");
  EXPECT_NE(&copy.linear("layers.2.w1"), &model.linear("layers.2.w1"));

  // The replaced w1 op (172x64) cannot go into another slot of a different shape.
  EXPECT_THROW(model.set_linear("layers.0.wo", std::move(old)), qtl::Error);
}

TEST_F(ModelTransformer, SetLinearRejectsBadOps) {
  Transformer model(checkpoint());
  std::string msg = error_of([&] {
    model.set_linear("layers.0.wq", std::make_unique<DenseLinear>(RowMatrixXf::Ones(32, 64)));
  });
  EXPECT_NE(msg.find("'layers.0.wq' is 64x64 (out x in) but the new op is 32x64"),
            std::string::npos)
      << msg;
  msg = error_of([&] { model.set_linear("layers.9.wq", nullptr); });
  EXPECT_NE(msg.find("no linear layer named 'layers.9.wq'"), std::string::npos) << msg;
  msg = error_of([&] { model.set_linear("layers.0.wq", nullptr); });
  EXPECT_NE(msg.find("null"), std::string::npos) << msg;
  msg = error_of([&] { (void)model.linear("output"); });
  EXPECT_NE(msg.find("'output'"), std::string::npos) << msg;
  RowMatrixXf bad = RowMatrixXf::Ones(64, 64);
  bad(3, 4) = std::nanf("");
  msg = error_of([&] { DenseLinear op(bad); });
  EXPECT_NE(msg.find("(3, 4)"), std::string::npos) << msg;
}

/// A broken LinearOp that drops the last output row.
class ShortLinear final : public LinearOp {
 public:
  explicit ShortLinear(Index out = 64, Index in = 64) : out_(out), in_(in) {}
  Index in_features() const override { return in_; }
  Index out_features() const override { return out_; }
  RowMatrixXf forward(qtl::MatrixRef x) const override {
    return RowMatrixXf::Zero(x.rows() - 1, out_);
  }
  std::unique_ptr<LinearOp> clone() const override { return std::make_unique<ShortLinear>(*this); }
  std::string describe() const override { return "short"; }

 private:
  Index out_, in_;
};

TEST_F(ModelTransformer, WrongOutputShapeOfAnOpIsAnError) {
  Transformer model(checkpoint());
  model.set_linear("layers.1.wo", std::make_unique<ShortLinear>());
  const std::string msg = error_of([&] { (void)model.forward(story_tokens(5)); });
  EXPECT_NE(msg.find("linear 'layers.1.wo' (short) returned 4x64 for an input of 5x64; "
                     "expected 5x64"),
            std::string::npos)
      << msg;
  KvCache cache(model.config());
  EXPECT_THROW((void)model.step(1, cache), qtl::Error);
  EXPECT_EQ(cache.size(), 0);
}

TEST_F(ModelTransformer, ClassifierOpRunsTheLogitsProduct) {
  Transformer model(checkpoint());
  const auto tokens = story_tokens(12);
  const RowMatrixXf before = model.forward(tokens);
  KvCache cache(model.config());
  const qtl::VectorXf last_before = model.forward_last(tokens, cache);
  EXPECT_EQ(model.classifier_op(), nullptr);
  const RowMatrixXf c = model.classifier();  // stories260K ties it to the embedding
  // Doubling every weight doubles every logit exactly: the op, not classifier(), is multiplied.
  auto calls = std::make_shared<int>(0);
  EXPECT_EQ(model.set_classifier_op(std::make_unique<CountingLinear>(std::make_unique<DenseLinear>(2.0f * c), calls)),
            nullptr);
  const RowMatrixXf doubled = model.forward(tokens);
  EXPECT_EQ(*calls, 1);
  EXPECT_EQ(doubled, (2.0f * before).eval());
  EXPECT_EQ(model.classifier(), c);  // the fp32 weights stay what calibration reads
  cache.clear();
  EXPECT_EQ(model.forward_last(tokens, cache), (2.0f * last_before).eval());

  // A copy clones it; null restores the fp32 product.
  const Transformer copy = model;
  ASSERT_NE(copy.classifier_op(), nullptr);
  EXPECT_NE(copy.classifier_op(), model.classifier_op());
  EXPECT_EQ(copy.forward(tokens), doubled);
  auto old = model.set_classifier_op(nullptr);
  ASSERT_NE(old, nullptr);
  EXPECT_EQ(old->describe(), "counting dense fp32 512x64");
  EXPECT_EQ(model.forward(tokens), before);

  // Shapes are checked where the op is set and where it runs; rotating needs the fp32 classifier.
  std::string msg = error_of([&] { model.set_classifier_op(std::make_unique<DenseLinear>(RowMatrixXf::Ones(64, 64))); });
  EXPECT_NE(msg.find("the classifier is 512x64 (vocab x dim) but the op (dense fp32 64x64) is 64x64"), std::string::npos)
      << msg;
  EXPECT_EQ(model.classifier_op(), nullptr);
  model.set_classifier_op(std::make_unique<ShortLinear>(512, 64));
  msg = error_of([&] { (void)model.forward(tokens); });
  EXPECT_NE(msg.find("the classifier op (short) returned 11x512 for an input of 12x64"), std::string::npos) << msg;
  msg = error_of([&] { model.rotate_residual(RowMatrixXf::Identity(64, 64)); });
  EXPECT_NE(msg.find("rotate before quantizing it"), std::string::npos) << msg;
}

TEST_F(ModelTransformer, ObserverSeesEveryLinearInputInOrder) {
  Transformer model(checkpoint());
  const auto tokens = story_tokens(12);
  std::vector<std::string> names;
  std::map<std::string, RowMatrixXf> inputs;
  model.set_observer([&](std::string_view name, qtl::MatrixRef x) {
    names.emplace_back(name);
    inputs[std::string(name)] = x;
  });
  const RowMatrixXf observed = model.forward(tokens);
  ASSERT_EQ(names.size(), 35u);
  const std::vector<std::string> layer0 = {"layers.0.wq", "layers.0.wk", "layers.0.wv",
                                           "layers.0.wo", "layers.0.w1", "layers.0.w3",
                                           "layers.0.w2"};
  EXPECT_EQ(std::vector<std::string>(names.begin(), names.begin() + 7), layer0);
  EXPECT_EQ(names.back(), "layers.4.w2");
  for (const auto& [name, x] : inputs) {
    EXPECT_EQ(x.rows(), 12) << name;
    EXPECT_EQ(x.cols(), model.linear(name).in_features()) << name;
  }
  EXPECT_TRUE(inputs["layers.1.wq"] == inputs["layers.1.wv"]);
  EXPECT_TRUE(inputs["layers.3.w1"] == inputs["layers.3.w3"]);

  // Layer 0's attention input is rmsnorm(embedding) ⊙ g, computed here by hand.
  const auto emb = checkpoint().tensor("tok_embeddings");
  const auto g = checkpoint().tensor("layers.0.attention_norm");
  for (int t = 0; t < 12; ++t) {
    const Eigen::RowVectorXf e = emb.row(tokens[t]);
    const float inv = 1.0f / std::sqrt(e.squaredNorm() / 64.0f + 1e-5f);
    const Eigen::RowVectorXf expected = (e * inv).cwiseProduct(g.row(0));
    EXPECT_LT((inputs["layers.0.wq"].row(t) - expected).cwiseAbs().maxCoeff(), 1e-5f) << t;
  }

  // Removing the observer stops the calls; the observer never changes the result.
  model.set_observer({});
  names.clear();
  EXPECT_EQ(max_abs_diff(model.forward(tokens), observed), 0.0);
  EXPECT_TRUE(names.empty());
}

TEST_F(ModelTransformer, BadInputsAreErrors) {
  const Transformer model(checkpoint());
  std::string msg = error_of([&] { (void)model.forward(std::vector<int>{}); });
  EXPECT_NE(msg.find("empty"), std::string::npos) << msg;
  msg = error_of([&] { (void)model.forward(std::vector<int>{1, 512}); });
  EXPECT_NE(msg.find("token 512 at index 1 is outside [0, 512)"), std::string::npos) << msg;
  msg = error_of([&] { (void)model.forward(std::vector<int>{1, -4}); });
  EXPECT_NE(msg.find("token -4"), std::string::npos) << msg;
  msg = error_of([&] { (void)model.forward(std::vector<int>(513, 1)); });
  EXPECT_NE(msg.find("513 tokens exceed seq_len = 512"), std::string::npos) << msg;

  KvCache cache(model.config());
  (void)model.forward(std::vector<int>(500, 1), cache);
  msg = error_of([&] { (void)model.forward(std::vector<int>(13, 1), cache); });
  EXPECT_NE(msg.find("13 new tokens after 500 cached ones exceed seq_len = 512"),
            std::string::npos)
      << msg;
  EXPECT_EQ(cache.size(), 500);  // a rejected call leaves the cache as it was

  auto other = model.config();
  other.n_layers = 2;
  KvCache wrong(other);
  msg = error_of([&] { (void)model.step(1, wrong); });
  EXPECT_NE(msg.find("another model config"), std::string::npos) << msg;

  RowMatrixXf h = RowMatrixXf::Zero(4, 63);
  msg = error_of([&] { model.forward_layer(0, h); });
  EXPECT_NE(msg.find("h.cols() must have size 64, got 63"), std::string::npos) << msg;
  h = RowMatrixXf::Zero(4, 64);
  msg = error_of([&] { model.forward_layer(5, h); });
  EXPECT_NE(msg.find("layer must be in [0, 4], got 5"), std::string::npos) << msg;
}

}  // namespace

// qtl's kernels against llama.cpp's CPU backend (ggml), timed in one process on the same weights.
//
// ggml is used the way llama.cpp uses it on this CPU: the backend registry loads the best CPU
// variant library (libggml-cpu-<arch>.so) from llama.cpp's folder, the CPU device runs the graph
// with a persistent thread pool of `threads` threads, and weights go to the CPU "extra" buffer
// type that repacks them for its interleaved AVX2 / AVX-512 GEMMs when it supports the type
// (llama.cpp's make_cpu_buft_list + weight_buft_supported idea: ask the device whether it supports
// the mul_mat with the weight in that buffer), else to the plain CPU buffer. The graph is
// Y = ggml_mul_mat(W [K x N], X [K x M] f32), built once per line; only its compute is timed.
// ggml quantizes X to its vec_dot type (Q8_0 / Q8_K / F16 / BF16) inside the timed compute, as
// qtl quantizes its activations inside gemm.
//
// Pairs (qtl kernel | ggml type, nearest bits per weight):
//   q4_0    qtl 4-bit symmetric group 32, int8 activations, built from the Q4_0 blocks' own codes
//           and fp16 scales (qtl's symmetric rule is q4_0's d = max / -8), so both engines hold
//           the same weights and their outputs are compared with each other as well
//   q4_K    the same qtl kernel, qtl's own round-to-nearest of the same fp32 matrix
//   q4_0-norepack, q4_K-norepack   the same with ggml's weights in the plain CPU buffer (llama.cpp's
//           --no-repack): its non-repacked paths (llamafile's sgemm for q4_0 GEMMs) can be faster,
//           and the rival is ggml's fastest
//   q8_0    qtl 8-bit symmetric group 32, int8 activations
//   q2_K    qtl 2-bit asymmetric group 32 (2.75 bits/weight; q2_K is 2.625), int8 activations
//   tq2_0, tq1_0   qtl's ternary lookup-table kernel (LutKernelMatrix, absmean, group 256)
//   iq4_nl  qtl NF4 table kernel, group 32, int8 activations (TableKernelMatrix Int8 mode)
//   bf16, f16   dense yardsticks. qtl has no dense kernel: its fp32-activation path
//           (UniformKernelMatrix, 8-bit symmetric group 32, ActivationMode::Fp32) stands in.
//
// Checks, before anything is timed (a failure aborts the run with the numbers): every engine's
// output on the line's own M tokens against the exact (double) product of that engine's own
// dequantized weights (qtl: its QuantizedMatrix; ggml: the type traits' to_float of the bytes it
// was given), within the bound of its activation rounding:
//   |y_r - y_exact_r| <= sum_c |W(r, c)| (f d_b(c) + e |x_c|) + extra_r + (32 + K/8) 2^-24 sum_c |W x|
//   d_b = max |x| over the activation block of c (32 for qtl, Q8_0; 256 for Q8_K), f = 1/2 for
//   qtl (fp32 scale), 0.57 for Q8_0 (its fp16 scale adds up to 127 * 2^-11 d), e = 2^-22 (int8),
//   2^-11 (F16 activations), 2^-8 (BF16), extra = sum_c |s_p| |x_c| / 254 for qtl's NF4 int8
//   table (qtl/kernel/table/kernel_matrix.hpp). All rows are checked for M <= 8, a sample of rows
//   beyond.
//
// Each line times qtl and ggml alternately (three rounds, best round each) and reports
//   qtl_us, ggml_us        time per call
//   ggml_over_qtl          ggml_us / qtl_us (> 1: qtl faster)
//   qtl_frac, ggml_frac    GEMV (M = 1): weight bytes / time / read bandwidth; GEMM: 2 M N K / time
//                          / int8 dot peak (int8 pairs) or fp32 FMA peak (bf16, f16)
//   qtl_bpw, ggml_bpw      bytes each engine reads per weight (its layout, scales included) x 8
//   repack                 1 when ggml's weights live in the repacking extra buffer type
//   check_qtl, check_ggml  max |error| / bound of the check (must be <= 1)
// The limits come from bench_limits.hpp (measured at start-up; each line re-measures its own and
// uses the larger). GEMV weights of both engines are cycled over copies totalling > 4 x L3.
//
// Run (default: W 4096 x 14336, GEMV 1 and 2 threads, GEMM M = 64 and 512 at 2 threads, ~10 min):
//   build/bench/vs_ggml_bench --benchmark_out=vs_ggml.json --benchmark_out_format=json
//   python3 bench/plot_vs_ggml vs_ggml.json vs_ggml.png
// The full matrix (shapes 4096x4096, 4096x14336, 14336x4096; M = 1, 8, 64, 512; 1 and 2 threads;
// hours): add --vs_ggml_full. Lines are named gemv/<type>/... and gemm/<type>/..., so
// --benchmark_filter selects pairs, e.g. --benchmark_filter='limit|/q4_'.
// Both engines as on an older CPU: QTL_KERNEL_PATH=avx2 picks qtl's AVX2 kernels and
// --vs_ggml_variant=haswell ggml's AVX2 build (avxvnni / alderlake for AVX-VNNI); the compute
// limits stay this CPU's (its widest int8 dot product), so compare the ratios.
#include <benchmark/benchmark.h>

#include <ggml-alloc.h>
#include <ggml-backend.h>
#include <ggml.h>

#include <link.h>
#include <unistd.h>

#include <qtl/format/packed_matrix.hpp>
#include <qtl/format/table_packed.hpp>
#include <qtl/kernel/lut.hpp>
#include <qtl/kernel/table.hpp>
#include <qtl/kernel/uniform.hpp>
#include <qtl/quant/codebook.hpp>
#include <qtl/quant/ggml_blocks.hpp>
#include <qtl/quant/quantize_matrix.hpp>
#include <qtl/quant/ternary.hpp>
#include <qtl/quant/uniform.hpp>

#include "bench_common.hpp"
#include "ggml_cpu_variant.hpp"
#include "bench_limits.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#ifndef QTL_LLAMA_CPP_BINS
#error "QTL_LLAMA_CPP_BINS (llama.cpp's library folder) must be defined by the build"
#endif

namespace {

using qtl::Index;
using qtl::kernel::ActivationMode;
using bench_limits::g_limits;
using bench_limits::seconds_since;

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "vs_ggml_bench: %s\n", what.c_str());
  std::exit(1);
}

// ---------------------------------------------------------------- the pairs
enum class QtlKind { U4FromQ4_0, U4, U8, U2, TernaryLut, Nf4, U8Fp32 };

struct Pair {
  const char* name;
  ggml_type type;
  QtlKind qtl;
  const char* qtl_name;
  bool int8;  // int8 activations (GEMM fraction of the int8 dot peak; else of the fp32 FMA peak)
  bool repack = true;  // false: the plain CPU buffer, as llama.cpp's --no-repack
};

constexpr Pair kPairs[] = {
    {"q4_0", GGML_TYPE_Q4_0, QtlKind::U4FromQ4_0, "u4sym-g32-a8 (q4_0's codes)", true},
    {"q4_0-norepack", GGML_TYPE_Q4_0, QtlKind::U4FromQ4_0, "u4sym-g32-a8 (q4_0's codes)", true, false},
    {"q4_K", GGML_TYPE_Q4_K, QtlKind::U4, "u4sym-g32-a8", true},
    {"q4_K-norepack", GGML_TYPE_Q4_K, QtlKind::U4, "u4sym-g32-a8", true, false},
    {"q8_0", GGML_TYPE_Q8_0, QtlKind::U8, "u8sym-g32-a8", true},
    {"q2_K", GGML_TYPE_Q2_K, QtlKind::U2, "u2asym-g32-a8", true},
    {"tq2_0", GGML_TYPE_TQ2_0, QtlKind::TernaryLut, "ternary-lut-g256", true},
    {"tq1_0", GGML_TYPE_TQ1_0, QtlKind::TernaryLut, "ternary-lut-g256", true},
    {"iq4_nl", GGML_TYPE_IQ4_NL, QtlKind::Nf4, "nf4-g32-a8", true},
    {"bf16", GGML_TYPE_BF16, QtlKind::U8Fp32, "u8sym-g32-fp32act", false},
    {"f16", GGML_TYPE_F16, QtlKind::U8Fp32, "u8sym-g32-fp32act", false},
};

// ---------------------------------------------------------------- ggml: backend, threads
// What names the loaded CPU variant: the path of the libggml-cpu-*.so in this process.
std::string loaded_cpu_variant() {
  const std::string found = bench_ggml::loaded_cpu_variant_path();
  return found.empty() ? "(none: ggml-cpu linked statically?)" : found;
}

// --vs_ggml_variant=NAME: ggml's registry picks the best variant among the libggml-cpu-*.so files
// of the folder it scans, so a scratch folder holding only libggml-cpu-NAME.so (a symbolic link)
// makes it load that one, as on a CPU whose best variant it is (haswell: AVX2; alderlake:
// AVX-VNNI; skylakex, icelake: AVX-512). The folder is removed once the library is loaded.
std::string g_variant;

void load_variant_only(const std::string& name) {
  const std::string lib = std::string(QTL_LLAMA_CPP_BINS) + "/libggml-cpu-" + name + ".so";
  if (access(lib.c_str(), R_OK) != 0) die("--vs_ggml_variant: no " + lib);
  char dir[] = "/tmp/qtl-ggml-variant-XXXXXX";
  if (mkdtemp(dir) == nullptr) die("--vs_ggml_variant: mkdtemp failed");
  const std::string link = std::string(dir) + "/libggml-cpu-" + name + ".so";
  if (symlink(lib.c_str(), link.c_str()) != 0) die("--vs_ggml_variant: symlink failed");
  ggml_backend_load_all_from_path(dir);
  unlink(link.c_str());
  rmdir(dir);
}

class GgmlCpu {
 public:
  GgmlCpu() {
    if (g_variant.empty()) {
      ggml_backend_load_all_from_path(QTL_LLAMA_CPP_BINS);
    } else {
      load_variant_only(g_variant);
    }
    dev_ = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (dev_ == nullptr) die("ggml found no CPU device in " QTL_LLAMA_CPP_BINS);
    backend_ = ggml_backend_dev_init(dev_, nullptr);
    if (backend_ == nullptr) die("ggml_backend_dev_init(CPU) failed");
    reg_ = ggml_backend_dev_backend_reg(dev_);
    set_n_threads_ = reinterpret_cast<ggml_backend_set_n_threads_t>(
        ggml_backend_reg_get_proc_address(reg_, "ggml_backend_set_n_threads"));
    threadpool_new_ = reinterpret_cast<ThreadpoolNewFn>(ggml_backend_reg_get_proc_address(reg_, "ggml_threadpool_new"));
    threadpool_free_ = reinterpret_cast<ThreadpoolFreeFn>(ggml_backend_reg_get_proc_address(reg_, "ggml_threadpool_free"));
    set_threadpool_ = reinterpret_cast<SetThreadpoolFn>(
        ggml_backend_reg_get_proc_address(reg_, "ggml_backend_cpu_set_threadpool"));
    if (set_n_threads_ == nullptr) die("the CPU backend has no ggml_backend_set_n_threads");
    auto extra = reinterpret_cast<ggml_backend_dev_get_extra_bufts_t>(
        ggml_backend_reg_get_proc_address(reg_, "ggml_backend_dev_get_extra_bufts"));
    if (extra != nullptr) {
      for (ggml_backend_buffer_type_t* b = extra(dev_); b != nullptr && *b != nullptr; ++b) extra_bufts_.push_back(*b);
    }
    variant_ = loaded_cpu_variant();
    std::string features;
    if (auto get = reinterpret_cast<ggml_backend_get_features_t>(
            ggml_backend_reg_get_proc_address(reg_, "ggml_backend_get_features"))) {
      for (ggml_backend_feature* f = get(reg_); f != nullptr && f->name != nullptr; ++f) {
        features += std::string(" ") + f->name + "=" + f->value;
      }
    }
    std::string bufts;
    for (auto* b : extra_bufts_) bufts += std::string(" ") + ggml_backend_buft_name(b);
    std::fprintf(stderr, "ggml: CPU variant %s\nggml: device %s (%s), extra buffer types:%s\nggml: features%s\n",
                 variant_.c_str(), ggml_backend_dev_name(dev_), ggml_backend_dev_description(dev_),
                 bufts.empty() ? " none" : bufts.c_str(), features.c_str());
  }
  ~GgmlCpu() {
    ggml_backend_free(backend_);
    for (auto& [t, pool] : pools_) threadpool_free_(pool);
  }
  GgmlCpu(const GgmlCpu&) = delete;
  GgmlCpu& operator=(const GgmlCpu&) = delete;

  ggml_backend_t backend() const noexcept { return backend_; }
  ggml_backend_dev_t device() const noexcept { return dev_; }
  const std::vector<ggml_backend_buffer_type_t>& extra_bufts() const noexcept { return extra_bufts_; }
  const std::string& variant() const noexcept { return variant_; }

  /// `threads` compute threads in a persistent pool (as llama.cpp's CLI attaches one), not a pool
  /// started and joined inside every compute.
  void use_threads(int threads) {
    set_n_threads_(backend_, threads);
    if (threadpool_new_ == nullptr || set_threadpool_ == nullptr || threadpool_free_ == nullptr) return;
    auto it = pools_.find(threads);
    if (it == pools_.end()) {
      ggml_threadpool_params p = ggml_threadpool_params_default(threads);
      it = pools_.emplace(threads, threadpool_new_(&p)).first;
      if (it->second == nullptr) die("ggml_threadpool_new failed");
    }
    set_threadpool_(backend_, it->second);
  }

 private:
  using ThreadpoolNewFn = ggml_threadpool_t (*)(ggml_threadpool_params*);
  using ThreadpoolFreeFn = void (*)(ggml_threadpool_t);
  using SetThreadpoolFn = void (*)(ggml_backend_t, ggml_threadpool_t);
  ggml_backend_dev_t dev_ = nullptr;
  ggml_backend_reg_t reg_ = nullptr;
  ggml_backend_t backend_ = nullptr;
  ggml_backend_set_n_threads_t set_n_threads_ = nullptr;
  ThreadpoolNewFn threadpool_new_ = nullptr;
  ThreadpoolFreeFn threadpool_free_ = nullptr;
  SetThreadpoolFn set_threadpool_ = nullptr;
  std::vector<ggml_backend_buffer_type_t> extra_bufts_;
  std::map<int, ggml_threadpool_t> pools_;
  std::string variant_;
};

GgmlCpu& ggml_cpu() {
  static GgmlCpu cpu;
  return cpu;
}

/// ggml's warnings and errors to stderr; its per-tensor info lines ("repack: repack tensor ...")
/// are dropped (the repack decision is printed once per matrix and is a counter of every line).
void ggml_log_warnings(ggml_log_level level, const char* text, void*) {
  if (level == GGML_LOG_LEVEL_WARN || level == GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
}

// ---------------------------------------------------------------- ggml: weights and graphs
/// W quantized by ggml_quantize_chunk (rows split over two threads), the host bytes kept for to_float.
std::vector<std::uint8_t> ggml_quantize(ggml_type type, const qtl::RowMatrixXf& w) {
  const Index rows = w.rows(), cols = w.cols();
  const std::size_t row_bytes = ggml_row_size(type, cols);
  std::vector<std::uint8_t> out(row_bytes * static_cast<std::size_t>(rows));
  auto part = [&](Index r0, Index r1) {
    ggml_quantize_chunk(type, w.data(), out.data(), r0 * cols, r1 - r0, cols, nullptr);
  };
  std::thread t(part, rows / 2, rows);
  part(0, rows / 2);
  t.join();
  return out;
}

/// `copies` tensors holding the same ggml weights, in the extra (repacking) buffer type when the
/// CPU device supports mul_mat with them there, else in the plain CPU buffer.
struct GgmlWeights {
  ggml_type type{};
  Index rows = 0, cols = 0;
  std::vector<std::uint8_t> host;  // the quantized bytes as ggml_quantize_chunk wrote them
  ggml_context* ctx = nullptr;
  ggml_backend_buffer_t buffer = nullptr;
  std::vector<ggml_tensor*> copies;
  std::string buft_name;
  bool repacked = false;

  GgmlWeights() = default;
  GgmlWeights(const GgmlWeights&) = delete;
  GgmlWeights& operator=(const GgmlWeights&) = delete;
  ~GgmlWeights() {
    if (buffer != nullptr) ggml_backend_buffer_free(buffer);
    if (ctx != nullptr) ggml_free(ctx);
  }
  std::size_t bytes() const noexcept { return host.size(); }
};

/// Whether the CPU device runs mul_mat(w, X [K x 512]) with w stored in `buft`.
bool mul_mat_supported_in(ggml_backend_buffer_type_t buft, ggml_type type, Index rows, Index cols) {
  ggml_init_params params{ggml_tensor_overhead() * 4, nullptr, true};
  ggml_context* ctx = ggml_init(params);
  ggml_tensor* w = ggml_new_tensor_2d(ctx, type, cols, rows);
  ggml_tensor* x = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, cols, 512);
  ggml_tensor* y = ggml_mul_mat(ctx, w, x);
  ggml_backend_buffer_t dummy = ggml_backend_buft_alloc_buffer(buft, 0);
  w->buffer = dummy;
  const bool ok = ggml_backend_dev_supports_op(ggml_cpu().device(), y);
  ggml_backend_buffer_free(dummy);
  ggml_free(ctx);
  return ok;
}

std::unique_ptr<GgmlWeights> make_ggml_weights(ggml_type type, const qtl::RowMatrixXf& w, std::size_t copies,
                                               bool allow_repack) {
  auto g = std::make_unique<GgmlWeights>();
  g->type = type;
  g->rows = w.rows();
  g->cols = w.cols();
  g->host = ggml_quantize(type, w);
  ggml_backend_buffer_type_t buft = ggml_backend_dev_buffer_type(ggml_cpu().device());
  for (auto* extra : ggml_cpu().extra_bufts()) {
    if (allow_repack && mul_mat_supported_in(extra, type, g->rows, g->cols)) {
      buft = extra;
      g->repacked = true;
      break;
    }
  }
  g->buft_name = ggml_backend_buft_name(buft);
  ggml_init_params params{ggml_tensor_overhead() * (copies + 1), nullptr, true};
  g->ctx = ggml_init(params);
  for (std::size_t i = 0; i < copies; ++i) g->copies.push_back(ggml_new_tensor_2d(g->ctx, type, g->cols, g->rows));
  g->buffer = ggml_backend_alloc_ctx_tensors_from_buft(g->ctx, buft);
  if (g->buffer == nullptr) die(std::string("could not allocate ggml weights in ") + g->buft_name);
  ggml_backend_buffer_set_usage(g->buffer, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
  for (ggml_tensor* t : g->copies) ggml_backend_tensor_set(t, g->host.data(), 0, g->host.size());
  return g;
}

/// Y_i = mul_mat(W_i, X) for the first `n` copies, one graph each, X and Y in a CPU buffer.
class GgmlMatmul {
 public:
  GgmlMatmul(const GgmlWeights& w, Index m, std::size_t n) {
    const std::size_t mem = ggml_tensor_overhead() * (2 * n + 2) + ggml_graph_overhead() * n + 4096;
    ggml_init_params params{mem, nullptr, true};
    ctx_ = ggml_init(params);
    x_ = ggml_new_tensor_2d(ctx_, GGML_TYPE_F32, w.cols, m);
    for (std::size_t i = 0; i < n; ++i) {
      ggml_tensor* y = ggml_mul_mat(ctx_, w.copies[i], x_);
      ggml_cgraph* gf = ggml_new_graph(ctx_);
      ggml_build_forward_expand(gf, y);
      ys_.push_back(y);
      graphs_.push_back(gf);
    }
    buffer_ = ggml_backend_alloc_ctx_tensors(ctx_, ggml_cpu().backend());
    if (buffer_ == nullptr) die("could not allocate ggml activations");
  }
  ~GgmlMatmul() {
    ggml_backend_buffer_free(buffer_);
    ggml_free(ctx_);
  }
  GgmlMatmul(const GgmlMatmul&) = delete;
  GgmlMatmul& operator=(const GgmlMatmul&) = delete;

  void set_x(const float* x) { ggml_backend_tensor_set(x_, x, 0, ggml_nbytes(x_)); }
  void compute(std::size_t i) {
    if (ggml_backend_graph_compute(ggml_cpu().backend(), graphs_[i]) != GGML_STATUS_SUCCESS) {
      die("ggml_backend_graph_compute failed");
    }
  }
  void get_y(std::size_t i, float* y) const { ggml_backend_tensor_get(ys_[i], y, 0, ggml_nbytes(ys_[i])); }
  std::size_t size() const noexcept { return graphs_.size(); }

 private:
  ggml_context* ctx_ = nullptr;
  ggml_backend_buffer_t buffer_ = nullptr;
  ggml_tensor* x_ = nullptr;
  std::vector<ggml_tensor*> ys_;
  std::vector<ggml_cgraph*> graphs_;
};

// ---------------------------------------------------------------- qtl side
using QtlKernel = std::variant<qtl::kernel::UniformKernelMatrix, qtl::kernel::TableKernelMatrix,
                               qtl::kernel::LutKernelMatrix>;

/// One row of an engine's dequantized weights, plus the per-weight bound of any rounding its
/// kernel applies to the weights themselves (NF4's int8 table).
using RowFn = std::function<void(Index r, float* w, float* extra)>;

struct QtlWeights {
  std::vector<QtlKernel> copies;
  RowFn row;
  std::size_t bytes = 0;
};

template <class Q>
RowFn rows_of(std::shared_ptr<const qtl::QuantizedMatrix<Q>> q, float extra_per_scale = 0.0f) {
  return [q, extra_per_scale](Index r, float* w, float* extra) {
    for (Index c = 0; c < q->cols(); ++c) {
      w[c] = q->value(r, c);
      extra[c] = extra_per_scale * std::fabs(q->params_at(r, c).scale);
    }
  };
}

/// qtl's 4-bit symmetric group-32 matrix with exactly the codes and fp16 scales of ggml's Q4_0.
qtl::QuantizedMatrix<qtl::Uniform<4, qtl::Mode::Symmetric>> q4_0_as_qtl(const std::vector<std::uint8_t>& bytes,
                                                                       Index rows, Index cols) {
  qtl::QuantizedMatrix<qtl::Uniform<4, qtl::Mode::Symmetric>> q;
  q.layout = qtl::make_group_layout(qtl::PerGroup{32}, rows, cols);
  q.codes.resize(static_cast<std::size_t>(rows * cols));
  q.params.resize(static_cast<std::size_t>(q.layout.num_param_sets()));
  const auto* src = reinterpret_cast<const std::byte*>(bytes.data());
  std::uint8_t codes[32];
  for (Index b = 0; b < rows * cols / 32; ++b) {
    float d = 0, m = 0;
    qtl::ggml::unpack_block32(qtl::ggml::Type::Q4_0, {src + b * 18, 18}, d, m, codes);
    q.params[static_cast<std::size_t>(b)] = {d, 8.0f};
    std::copy(codes, codes + 32, q.codes.begin() + b * 32);
  }
  return q;
}

template <class K>
void fill_copies(QtlWeights& out, K one, bool cycle) {
  out.bytes = one.bytes();
  for (const K& k : bench_common::copies_beyond_l3(one, cycle)) out.copies.emplace_back(k);
}

QtlWeights make_qtl_weights(QtlKind kind, const qtl::RowMatrixXf& w, const std::vector<std::uint8_t>& q4_0_bytes,
                            bool cycle) {
  using qtl::kernel::LutKernelMatrix;
  using qtl::kernel::TableKernelMatrix;
  using qtl::kernel::UniformKernelMatrix;
  QtlWeights out;
  auto uniform = [&](auto q, ActivationMode mode) {
    auto shared = std::make_shared<const decltype(q)>(std::move(q));
    fill_copies(out, UniformKernelMatrix(qtl::pack(*shared), mode), cycle);
    out.row = rows_of(shared);
  };
  switch (kind) {
    case QtlKind::U4FromQ4_0: uniform(q4_0_as_qtl(q4_0_bytes, w.rows(), w.cols()), ActivationMode::Int8); break;
    case QtlKind::U4:
      uniform(qtl::quantize_matrix(qtl::Uniform<4, qtl::Mode::Symmetric>{}, qtl::PerGroup{32}, w), ActivationMode::Int8);
      break;
    case QtlKind::U8:
      uniform(qtl::quantize_matrix(qtl::Uniform<8, qtl::Mode::Symmetric>{}, qtl::PerGroup{32}, w), ActivationMode::Int8);
      break;
    case QtlKind::U8Fp32:
      uniform(qtl::quantize_matrix(qtl::Uniform<8, qtl::Mode::Symmetric>{}, qtl::PerGroup{32}, w), ActivationMode::Fp32);
      break;
    case QtlKind::U2:
      uniform(qtl::quantize_matrix(qtl::Uniform<2, qtl::Mode::Asymmetric>{}, qtl::PerGroup{32}, w), ActivationMode::Int8);
      break;
    case QtlKind::TernaryLut: {
      auto q = std::make_shared<const qtl::QuantizedMatrix<qtl::Ternary>>(
          qtl::quantize_matrix(qtl::Ternary{}, qtl::PerGroup{256}, w));
      fill_copies(out, LutKernelMatrix(qtl::pack_table(*q)), cycle);
      out.row = rows_of(q);
      break;
    }
    case QtlKind::Nf4: {
      auto q = std::make_shared<const qtl::QuantizedMatrix<qtl::NF4>>(qtl::quantize_matrix(qtl::NF4{}, qtl::PerGroup{32}, w));
      fill_copies(out, TableKernelMatrix(qtl::pack_table(*q), ActivationMode::Int8), cycle);
      out.row = rows_of(q, 1.0f / 254.0f);  // NF4's max |T| = 1: |W8 - W_hat| <= |s| / 254
      break;
    }
  }
  return out;
}

void qtl_gemm(const QtlKernel& k, const float* x, Index cols, Index m, float* y, Index rows, int threads) {
  std::visit([&](const auto& kk) { kk.gemm(x, cols, m, y, rows, threads); }, k);
}

// ---------------------------------------------------------------- the check
struct ActivationRounding {
  Index block = 32;  // activation block d_b is taken over
  double f = 0.5;    // |x - x_q| <= f d_b + e |x|
  double e = 0x1p-22;
};

ActivationRounding qtl_rounding(QtlKind kind) {
  if (kind == QtlKind::U8Fp32) return {32, 0.0, 0.0};
  return {32, 0.5, 0x1p-22};
}

ActivationRounding ggml_rounding(ggml_type type) {
  switch (type) {
    case GGML_TYPE_F16: return {32, 0.0, 0x1p-11};
    case GGML_TYPE_BF16: return {32, 0.0, 0x1p-8};
    case GGML_TYPE_Q4_0:
    case GGML_TYPE_Q8_0:
    case GGML_TYPE_IQ4_NL: return {32, 0.57, 0x1p-20};
    default: return {256, 0.5, 0x1p-20};  // Q8_K: fp32 scale per 256
  }
}

struct CheckResult {
  double worst = 0;  // max |err| / bound
  double max_err = 0;
};

/// Checks y (m x rows) against the exact product of `row`'s weights with x (m x cols) on the rows
/// r = 0, stride, 2 stride, ...
CheckResult check_product(const RowFn& row, const ActivationRounding& ar, const std::vector<float>& x, Index m,
                          Index rows, Index cols, const std::vector<float>& y, Index stride) {
  std::vector<float> w(static_cast<std::size_t>(cols)), extra(static_cast<std::size_t>(cols));
  std::vector<double> db(static_cast<std::size_t>(m * cols));
  for (Index t = 0; t < m; ++t) {
    for (Index c0 = 0; c0 < cols; c0 += ar.block) {
      double mx = 0;
      for (Index c = c0; c < std::min(cols, c0 + ar.block); ++c) mx = std::max(mx, std::fabs(double{x[t * cols + c]}));
      for (Index c = c0; c < std::min(cols, c0 + ar.block); ++c) db[t * cols + c] = mx / 127.0;
    }
  }
  const double float_slack = (32.0 + static_cast<double>(cols) / 8.0) * 0x1p-24;
  CheckResult res;
  for (Index r = 0; r < rows; r += stride) {
    row(r, w.data(), extra.data());
    for (Index t = 0; t < m; ++t) {
      const float* xt = x.data() + t * cols;
      double exact = 0, bound = 0, mag = 0;
      for (Index c = 0; c < cols; ++c) {
        const double wc = w[c], xc = xt[c], aw = std::fabs(wc), ax = std::fabs(xc);
        exact += wc * xc;
        mag += aw * ax;
        bound += aw * (ar.f * db[t * cols + c] + ar.e * ax) + extra[c] * ax;
      }
      bound += float_slack * mag + 1e-30;
      const double err = std::fabs(double{y[t * rows + r]} - exact);
      if (!(err <= bound)) {  // also catches NaN
        die("check failed at row " + std::to_string(r) + ", token " + std::to_string(t) + ": y = " +
            std::to_string(y[t * rows + r]) + ", exact " + std::to_string(exact) + ", |error| " + std::to_string(err) +
            " > bound " + std::to_string(bound));
      }
      res.worst = std::max(res.worst, err / bound);
      res.max_err = std::max(res.max_err, err);
    }
  }
  return res;
}

// ---------------------------------------------------------------- prepared pairs
/// The fp32 matrix both engines quantize: N(0, 0.02^2) with 1 in 1000 weights 8x larger (the
/// outliers real LLM weights have). Cached for the last shape.
const qtl::RowMatrixXf& source_matrix(Index rows, Index cols) {
  static qtl::RowMatrixXf w;
  if (w.rows() != rows || w.cols() != cols) {
    w.resize(0, 0);
    w.resize(rows, cols);
    std::mt19937 rng(42u + static_cast<unsigned>(rows) * 7u + static_cast<unsigned>(cols));
    std::normal_distribution<float> d(0.0f, 0.02f);
    std::uniform_int_distribution<int> outlier(0, 999);
    for (Index i = 0; i < w.size(); ++i) w.data()[i] = d(rng) * (outlier(rng) == 0 ? 8.0f : 1.0f);
  }
  return w;
}

struct Prepared {
  std::unique_ptr<GgmlWeights> ggml;
  QtlWeights qtl;
};

/// Both engines' weights for one pair and shape, cached for the last key (lines of one pair and
/// shape are registered together).
Prepared& prepared(int pair, Index rows, Index cols) {
  static std::string key;
  static std::unique_ptr<Prepared> p;
  const std::string k = std::to_string(pair) + "/" + std::to_string(rows) + "/" + std::to_string(cols);
  if (k != key) {
    p.reset();
    const Pair& pr = kPairs[pair];
    const qtl::RowMatrixXf& w = source_matrix(rows, cols);
    const auto t0 = std::chrono::steady_clock::now();
    auto out = std::make_unique<Prepared>();
    const std::size_t one = ggml_row_size(pr.type, cols) * static_cast<std::size_t>(rows);
    const std::size_t n = std::max<std::size_t>(1, 4 * bench_limits::l3_bytes() / one + 1);
    out->ggml = make_ggml_weights(pr.type, w, n, pr.repack);
    out->qtl = make_qtl_weights(pr.qtl, w, out->ggml->host, true);
    std::fprintf(stderr, "%s %lldx%lld: ggml in %s (%s), %zu + %zu copies, prepared in %.1f s\n", pr.name,
                 static_cast<long long>(rows), static_cast<long long>(cols), out->ggml->buft_name.c_str(),
                 out->ggml->repacked ? "repacked" : "not repacked", out->ggml->copies.size(), out->qtl.copies.size(),
                 seconds_since(t0));
    p = std::move(out);
    key = k;
  }
  return *p;
}

/// ggml's dequantized rows (its type traits' to_float of the bytes it was given).
RowFn ggml_rows(const GgmlWeights& g) {
  return [&g](Index r, float* w, float* extra) {
    const std::size_t rb = ggml_row_size(g.type, g.cols);
    ggml_get_type_traits(g.type)->to_float(g.host.data() + static_cast<std::size_t>(r) * rb, w, g.cols);
    std::fill(extra, extra + g.cols, 0.0f);
  };
}

/// Seconds per call of f(i), i cycling over n copies, for at least `secs` (one warm-up pass first).
template <class F>
double time_per_call(std::size_t n, double secs, F&& f) {
  for (std::size_t i = 0; i < n; ++i) f(i);
  std::size_t calls = 0, i = 0;
  const auto t0 = std::chrono::steady_clock::now();
  double elapsed = 0;
  do {
    f(i);
    i = i + 1 == n ? 0 : i + 1;
    ++calls;
    elapsed = seconds_since(t0);
  } while (elapsed < secs || calls < 3);
  return elapsed / static_cast<double>(calls);
}

// ---------------------------------------------------------------- one line
// args: pair, rows, cols, m, threads
void BM_vs_ggml(benchmark::State& state) {
  const int pair = static_cast<int>(state.range(0));
  const Index rows = state.range(1), cols = state.range(2), m = state.range(3);
  const int threads = static_cast<int>(state.range(4));
  const Pair& pr = kPairs[pair];
  Prepared& p = prepared(pair, rows, cols);
  const bool gemv = m == 1;
  const std::size_t nq = gemv ? p.qtl.copies.size() : 1, ng = gemv ? p.ggml->copies.size() : 1;

  const auto x = bench_common::random_vector(static_cast<std::size_t>(m * cols), 7u + static_cast<unsigned>(m));
  std::vector<float> yq(static_cast<std::size_t>(m * rows)), yg(yq.size());
  GgmlMatmul gg(*p.ggml, m, ng);
  gg.set_x(x.data());
  ggml_cpu().use_threads(threads);

  // Check both engines on this line's tokens before timing.
  qtl_gemm(p.qtl.copies[0], x.data(), cols, m, yq.data(), rows, threads);
  gg.compute(0);
  gg.get_y(0, yg.data());
  const Index stride = m <= 8 ? 1 : std::max<Index>(1, rows * m / 2048);
  const CheckResult cq = check_product(p.qtl.row, qtl_rounding(pr.qtl), x, m, rows, cols, yq, stride);
  const CheckResult cg = check_product(ggml_rows(*p.ggml), ggml_rounding(pr.type), x, m, rows, cols, yg, stride);
  if (pr.qtl == QtlKind::U4FromQ4_0) {
    // The same weights: the two outputs differ only by the two activation roundings.
    double d = 0, mag = 0;
    for (std::size_t i = 0; i < yq.size(); ++i) {
      d = std::max(d, double{std::fabs(yq[i] - yg[i])});
      mag = std::max(mag, double{std::fabs(yq[i])});
    }
    state.counters["max_qtl_ggml_diff_rel"] = mag > 0 ? d / mag : 0.0;
  }

  // Limits: the start-up measurement and one taken just before this line; the larger is used.
  const double local_bw = bench_limits::read_gbps(threads, 2);
  const double bw = std::max(local_bw, g_limits.read_gbps[threads]);
  const double local_peak = pr.int8 ? bench_limits::dot_gops(threads, 3'000'000) : bench_limits::fma_gflops(threads, 3'000'000);
  const double peak = std::max(local_peak, pr.int8 ? g_limits.dot_gops[threads] : g_limits.fma_gflops[threads]);

  double tq = 1e30, tg = 1e30;
  const double round_secs = gemv ? 0.25 : 0.4;
  for (auto _ : state) {
    for (int round = 0; round < 3; ++round) {
      tq = std::min(tq, time_per_call(nq, round_secs, [&](std::size_t i) {
                      qtl_gemm(p.qtl.copies[i], x.data(), cols, m, yq.data(), rows, threads);
                      benchmark::DoNotOptimize(yq.data());
                    }));
      tg = std::min(tg, time_per_call(ng, round_secs, [&](std::size_t i) { gg.compute(i); }));
    }
    state.SetIterationTime(tq);
  }
  const double ops = 2.0 * static_cast<double>(m) * static_cast<double>(rows) * static_cast<double>(cols);
  const double weights = static_cast<double>(rows) * static_cast<double>(cols);
  const double qb = static_cast<double>(p.qtl.bytes), gb = static_cast<double>(p.ggml->bytes());
  state.counters["qtl_us"] = tq * 1e6;
  state.counters["ggml_us"] = tg * 1e6;
  state.counters["ggml_over_qtl"] = tg / tq;
  state.counters["qtl_frac"] = gemv ? qb / tq / 1e9 / bw : ops / tq / 1e9 / peak;
  state.counters["ggml_frac"] = gemv ? gb / tg / 1e9 / bw : ops / tg / 1e9 / peak;
  state.counters["limit"] = gemv ? bw : peak;
  state.counters["qtl_bpw"] = 8.0 * qb / weights;
  state.counters["ggml_bpw"] = 8.0 * gb / weights;
  state.counters["repack"] = p.ggml->repacked ? 1 : 0;
  state.counters["check_qtl"] = cq.worst;
  state.counters["check_ggml"] = cg.worst;
  state.counters["threads"] = threads;
  state.counters["m"] = static_cast<double>(m);
  state.SetLabel(std::string(pr.qtl_name) + " vs " + pr.name + (p.ggml->repacked ? " (" + p.ggml->buft_name + ")" : ""));
}

bool g_full = false;

void register_benchmarks() {
  bench_limits::register_limit_lines();
  const std::vector<std::pair<Index, Index>> shapes =
      g_full ? std::vector<std::pair<Index, Index>>{{4096, 4096}, {4096, 14336}, {14336, 4096}}
             : std::vector<std::pair<Index, Index>>{{4096, 14336}};
  struct Run {
    Index m;
    int threads;
  };
  std::vector<Run> runs;
  if (g_full) {
    for (Index m : {1, 8, 64, 512}) {
      for (int t : {1, 2}) runs.push_back({m, t});
    }
  } else {
    runs = {{1, 1}, {1, 2}, {64, 2}, {512, 2}};
  }
  for (auto [rows, cols] : shapes) {
    for (int pair = 0; pair < static_cast<int>(std::size(kPairs)); ++pair) {
      for (const Run& r : runs) {
        benchmark::RegisterBenchmark((std::string(r.m == 1 ? "gemv/" : "gemm/") + kPairs[pair].name).c_str(), BM_vs_ggml)
            ->Args({pair, rows, cols, r.m, r.threads})
            ->ArgNames({"pair", "rows", "cols", "m", "threads"})
            ->Iterations(1)
            ->UseManualTime();
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  // Ours, removed before Google Benchmark sees the arguments: --vs_ggml_full (the full matrix),
  // --vs_ggml_variant=NAME (ggml's CPU variant libggml-cpu-NAME.so instead of the best one).
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--vs_ggml_full") == 0) {
      g_full = true;
    } else if (std::strncmp(argv[i], "--vs_ggml_variant=", 18) == 0) {
      g_variant = argv[i] + 18;
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  ggml_log_set(ggml_log_warnings, nullptr);
  ggml_cpu();  // load the backend (and print its variant) before the limits are measured
  bench_limits::measure();
  register_benchmarks();
  benchmark::AddCustomContext("ggml_cpu_variant", ggml_cpu().variant());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

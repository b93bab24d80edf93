// llama_logits: evaluates a list of token ids with the real llama.cpp (libllama, CPU backend) in
// one batch and writes the logits of every position, so that tests can hold qtl's own forward
// pass against llama.cpp's on the same GGUF file.
//
//   llama_logits [options] MODEL.gguf OUT.f32 TOKENS.txt
//   llama_logits [options] MODEL.gguf OUT.f32 -- ID ID ID ...
//
// TOKENS.txt holds the token ids as decimal integers separated by whitespace or commas; they are
// evaluated exactly as given (no BOS is added: put it first yourself). OUT.f32 receives raw
// little-endian float32 logits, row-major [n_tokens x n_vocab], position i in row i. The one
// line printed on stdout is "n_tokens n_vocab".
//
// Options:
//   --threads N   CPU threads (default 1: deterministic, and the same order of sums every run)
//   --kv-f16      keep the KV cache in F16, llama.cpp's default. Without it K and V are cached
//                 in F32 and flash attention is off, so the attention is plain F32 arithmetic
//                 like a reference forward pass (F16 K/V round the keys and values to 11 bits).
//   -v            llama.cpp's log on stderr (otherwise only warnings, errors and which CPU
//                 backend variant was loaded)
//
// The CPU backend variants (libggml-cpu-<arch>.so) are loaded from this executable's folder
// (tests/llama/CMakeLists.txt links them there), or from $QTL_LLAMA_BACKEND_DIR when set.
#include <llama.h>
#include <ggml-backend.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

namespace {

bool g_verbose = false;

void log_callback(ggml_log_level level, const char* text, void* /*user_data*/) {
  // CONT lines continue the previous message: follow its fate.
  static bool last_shown = false;
  bool show = g_verbose || level == GGML_LOG_LEVEL_WARN || level == GGML_LOG_LEVEL_ERROR ||
              std::strstr(text, "loaded CPU backend") != nullptr;
  if (level == GGML_LOG_LEVEL_CONT) show = last_shown;
  last_shown = show;
  if (show) std::fputs(text, stderr);
}

[[noreturn]] void die(const std::string& message) {
  std::fprintf(stderr, "llama_logits: %s\n", message.c_str());
  std::exit(1);
}

void usage() {
  std::fputs("usage: llama_logits [--threads N] [--kv-f16] [-v] MODEL.gguf OUT.f32 (TOKENS.txt | -- ID...)\n",
             stderr);
  std::exit(2);
}

llama_token parse_token(std::string_view s) {
  std::string str(s);
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(str.c_str(), &end, 10);
  if (str.empty() || *end != '\0' || errno != 0 || v < 0 || v > INT32_MAX) die("bad token id '" + str + "'");
  return static_cast<llama_token>(v);
}

std::vector<llama_token> read_tokens(const char* path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) die(std::string("cannot read ") + path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<llama_token> tokens;
  std::string cur;
  for (char c : text + ' ') {
    if (c == ',' || c == ' ' || c == '\n' || c == '\r' || c == '\t') {
      if (!cur.empty()) tokens.push_back(parse_token(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  return tokens;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 1;
  bool kv_f16 = false;
  std::vector<const char*> positional;
  std::vector<llama_token> tokens;
  bool tokens_from_argv = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (tokens_from_argv) {
      tokens.push_back(parse_token(a));
    } else if (a == "--") {
      tokens_from_argv = true;
    } else if (a == "--threads" && i + 1 < argc) {
      threads = std::atoi(argv[++i]);
      if (threads < 1) die("--threads needs a positive count");
    } else if (a == "--kv-f16") {
      kv_f16 = true;
    } else if (a == "-v") {
      g_verbose = true;
    } else if (!a.empty() && a[0] == '-') {
      usage();
    } else {
      positional.push_back(argv[i]);
    }
  }
  if (positional.size() != (tokens_from_argv ? 2u : 3u)) usage();
  if (!tokens_from_argv) tokens = read_tokens(positional[2]);
  if (tokens.empty()) die("no tokens to evaluate");
  const auto n_tokens = static_cast<int32_t>(tokens.size());

  llama_log_set(log_callback, nullptr);
  if (const char* dir = std::getenv("QTL_LLAMA_BACKEND_DIR"); dir != nullptr && *dir != '\0') {
    ggml_backend_load_all_from_path(dir);
  } else {
    ggml_backend_load_all();
  }
  llama_backend_init();

  llama_model_params mparams = llama_model_default_params();
  mparams.n_gpu_layers = 0;
  llama_model* model = llama_model_load_from_file(positional[0], mparams);
  if (model == nullptr) die(std::string("cannot load ") + positional[0]);
  const llama_vocab* vocab = llama_model_get_vocab(model);
  const int32_t n_vocab = llama_vocab_n_tokens(vocab);
  for (llama_token t : tokens) {
    if (t >= n_vocab) die("token id " + std::to_string(t) + " is outside the vocabulary of " + std::to_string(n_vocab));
  }

  llama_context_params cparams = llama_context_default_params();
  cparams.n_ctx = static_cast<uint32_t>(n_tokens);
  cparams.n_batch = static_cast<uint32_t>(n_tokens);
  cparams.n_ubatch = static_cast<uint32_t>(n_tokens);
  cparams.n_seq_max = 1;
  cparams.n_threads = threads;
  cparams.n_threads_batch = threads;
  cparams.no_perf = true;
  if (!kv_f16) {
    cparams.type_k = GGML_TYPE_F32;
    cparams.type_v = GGML_TYPE_F32;
    cparams.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
  }
  llama_context* ctx = llama_init_from_model(model, cparams);
  if (ctx == nullptr) die("cannot create a context");

  llama_batch batch = llama_batch_init(n_tokens, 0, 1);
  for (int32_t i = 0; i < n_tokens; ++i) {
    batch.token[i] = tokens[static_cast<size_t>(i)];
    batch.pos[i] = i;
    batch.n_seq_id[i] = 1;
    batch.seq_id[i][0] = 0;
    batch.logits[i] = 1;
  }
  batch.n_tokens = n_tokens;
  if (int rc = llama_decode(ctx, batch); rc != 0) die("llama_decode failed with " + std::to_string(rc));

  std::FILE* out = std::fopen(positional[1], "wb");
  if (out == nullptr) die(std::string("cannot write ") + positional[1]);
  for (int32_t i = 0; i < n_tokens; ++i) {
    const float* row = llama_get_logits_ith(ctx, i);
    if (row == nullptr) die("no logits for position " + std::to_string(i));
    if (std::fwrite(row, sizeof(float), static_cast<size_t>(n_vocab), out) != static_cast<size_t>(n_vocab)) {
      die(std::string("short write to ") + positional[1]);
    }
  }
  if (std::fclose(out) != 0) die(std::string("cannot write ") + positional[1]);
  std::printf("%d %d\n", n_tokens, n_vocab);

  llama_batch_free(batch);
  llama_free(ctx);
  llama_model_free(model);
  llama_backend_free();
  return 0;
}

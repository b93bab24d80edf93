// qtl/model/tokenizer.hpp — the llama2.c tokenizer (SentencePiece BPE exported by llama2.c).
//
// File format (little-endian): int32 max_token_length, then for every token in id order:
// float32 score, int32 byte length n, n bytes (the piece, not NUL-terminated). The number of
// tokens is not stored: the file is read to its end. Ids 0, 1, 2 are <unk>, BOS, EOS; a
// vocabulary trained with byte fallback has the pieces "<0x00>".."<0xFF>" (byte b at id b + 3 in
// llama2.c's exports). Small SentencePiece vocabularies trained without byte fallback (e.g. 105
// tokens) are valid too: a character no piece spells then becomes <unk>.
// The same tokenizer comes from a GGUF file's tokenizer.ggml.* metadata (from_pieces; see
// qtl/model/gguf_model.hpp): pieces, scores, token types (byte tokens have type 6) and the
// <unk>/BOS/EOS ids.
//
// encode(text):
//   1. [BOS] if requested; then, when text is non-empty, the piece " " (the "dummy prefix"
//      SentencePiece adds so that a first word is tokenized like a word after a space);
//   2. each UTF-8 character (a lead byte plus up to 3 continuation bytes 10xxxxxx) becomes its
//      piece's id, or, when no piece spells it, one byte-fallback id per byte; a vocabulary
//      without byte pieces maps such a character to <unk> (SentencePiece's rule), and one without
//      <unk> either cannot encode it: a qtl::Error naming the character and its byte offset;
//   3. repeatedly merge the adjacent pair whose concatenation is a piece with the highest
//      score, the leftmost pair on ties, until no adjacent pair concatenates to a piece.
// decode(ids) inverts it: BOS and EOS produce nothing, the leading space of the piece right
// after BOS is dropped (the dummy prefix), and "<0xNN>" pieces produce the byte 0xNN. So
// decode(encode(s)) == s for every s, and decode(encode(s, false)) == " " + s for non-empty s.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <queue>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "qtl/core/error.hpp"

namespace qtl::model {

class Tokenizer {
 public:
  static constexpr int kUnk = 0;
  static constexpr int kBos = 1;
  static constexpr int kEos = 2;
  /// Byte b is encoded as id b + kByteOffset when no piece spells its character.
  static constexpr int kByteOffset = 3;

  /// Reads and validates a tokenizer file. Throws qtl::Error when the file is missing or
  /// truncated, a length or score is invalid, or it has fewer than 3 tokens (<unk>, BOS, EOS).
  [[nodiscard]] static Tokenizer load(const std::filesystem::path& path);

  /// Token kinds, numbered as GGUF's tokenizer.ggml.token_type stores them (llama.cpp's
  /// llama_token_type).
  enum class TokenType : std::int32_t { Undefined = 0, Normal = 1, Unknown = 2, Control = 3,
                                        UserDefined = 4, Unused = 5, Byte = 6 };

  /// A tokenizer from its pieces in id order (e.g. GGUF's tokenizer.ggml.tokens), their scores
  /// and, optionally, token types (empty: byte tokens are recognized by their "<0xNN>" spelling).
  /// `unk` may be -1 (none). Throws qtl::Error naming the value on mismatched sizes, ids out of
  /// range, a non-finite score, or a byte-typed token that is not spelled "<0xNN>".
  [[nodiscard]] static Tokenizer from_pieces(std::vector<std::string> pieces, std::vector<float> scores,
                                             std::vector<std::int32_t> token_types, int unk, int bos, int eos,
                                             std::string source);

  [[nodiscard]] int unk_id() const { return unk_; }
  [[nodiscard]] int bos_id() const { return bos_; }
  [[nodiscard]] int eos_id() const { return eos_; }
  /// Whether every byte has a "<0xNN>" piece (characters without a piece are spelled in bytes).
  [[nodiscard]] bool byte_fallback() const { return byte_fallback_; }
  /// The GGUF token type of `id`: the stored one, or Byte / Unknown / Control / Normal derived
  /// from the piece and the special ids.
  [[nodiscard]] TokenType token_type(int id) const {
    require_id("Tokenizer::token_type", id);
    return types_[static_cast<std::size_t>(id)];
  }

  [[nodiscard]] int vocab_size() const { return static_cast<int>(pieces_.size()); }
  [[nodiscard]] int max_token_length() const { return max_token_length_; }
  /// The file this tokenizer was read from (for messages).
  [[nodiscard]] const std::string& source() const { return source_; }

  /// The piece's bytes as stored in the file ("<0x0A>" for the newline byte token).
  [[nodiscard]] const std::string& piece(int id) const {
    require_id("Tokenizer::piece", id);
    return pieces_[static_cast<std::size_t>(id)];
  }
  [[nodiscard]] float score(int id) const {
    require_id("Tokenizer::score", id);
    return scores_[static_cast<std::size_t>(id)];
  }
  /// The id whose piece is exactly `piece` (the lowest id if the file repeats a piece).
  [[nodiscard]] std::optional<int> find(std::string_view piece) const {
    const auto it = ids_.find(std::string(piece));
    if (it == ids_.end()) return std::nullopt;
    return it->second;
  }

  /// Throws unless the vocabulary size equals the model's (`model_vocab_size`).
  void require_vocab_size(int model_vocab_size) const {
    if (model_vocab_size != vocab_size()) {
      fail("tokenizer: '", source_, "' has ", vocab_size(),
           " tokens but the model's vocab_size is ", model_vocab_size,
           "; use the tokenizer the model was trained with");
    }
  }

  /// Token ids of `text` as described at the top of this header. Empty text gives [BOS]
  /// (or nothing when bos is false).
  [[nodiscard]] std::vector<int> encode(std::string_view text, bool bos = true) const;

  /// The text of a token sequence (inverse of encode, see the top of this header).
  /// Throws qtl::Error on an id outside [0, vocab_size).
  [[nodiscard]] std::string decode(std::span<const int> ids) const {
    std::string out;
    int previous = -1;
    for (int id : ids) {
      out += decode_token(previous, id);
      previous = id;
    }
    return out;
  }

  /// The text one token adds after `previous` (-1 for none): for streaming generation.
  [[nodiscard]] std::string decode_token(int previous, int id) const {
    require_id("Tokenizer::decode", id);
    if (id == bos_ || id == eos_) return {};
    const auto i = static_cast<std::size_t>(id);
    if (byte_of_[i] >= 0) return std::string(1, static_cast<char>(byte_of_[i]));
    const std::string& p = pieces_[i];
    if (previous == bos_ && !p.empty() && p.front() == ' ') return p.substr(1);
    return p;
  }

 private:
  void require_id(const char* where, int id) const {
    if (id < 0 || id >= vocab_size()) {
      fail(where, ": token id ", id, " is outside [0, ", vocab_size(), ")");
    }
  }

  static std::uint64_t pair_key(int left, int right) {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(left)) << 32) |
           static_cast<std::uint32_t>(right);
  }

  /// Byte pieces, types, the piece index and the merges, once pieces_ and scores_ are set.
  void finish(std::vector<std::int32_t> token_types);

  std::string source_;
  int max_token_length_ = 0;
  int unk_ = kUnk, bos_ = kBos, eos_ = kEos;
  bool byte_fallback_ = false;
  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::vector<TokenType> types_;
  std::vector<int> byte_of_;  // byte value of "<0xNN>" pieces, else -1
  std::array<int, 256> byte_id_{};  // id of byte b's piece, -1 when the vocabulary lacks it
  std::unordered_map<std::string, int> ids_;
  // (left id, right id) -> id of the piece spelled by their concatenation: every merge there is.
  std::unordered_map<std::uint64_t, int> merges_;
  int space_id_ = -1;  // the dummy-prefix piece " ", -1 if the vocabulary lacks it
};

inline Tokenizer Tokenizer::load(const std::filesystem::path& path) {
  const std::string file = path.string();
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    fail("tokenizer: file '", file, "' not found (or not a regular file)");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("tokenizer: cannot open '", file, "'");
  const std::string bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};

  std::size_t at = 0;
  auto read_i32 = [&](const char* what, std::size_t token) {
    if (bytes.size() - at < 4) {
      fail("tokenizer: '", file, "' is truncated: ", what, " of token ", token, " at byte ", at,
           " but the file has ", bytes.size(), " bytes");
    }
    std::int32_t v = 0;
    std::memcpy(&v, bytes.data() + at, 4);
    at += 4;
    return v;
  };

  Tokenizer t;
  t.source_ = file;
  if (bytes.size() < 4) {
    fail("tokenizer: '", file, "' has ", bytes.size(),
         " bytes, fewer than the 4-byte max_token_length header");
  }
  t.max_token_length_ = read_i32("header", 0);
  if (t.max_token_length_ < 1 || t.max_token_length_ > (1 << 16)) {
    fail("tokenizer: '", file, "': max_token_length = ", t.max_token_length_,
         " is out of range [1, 65536]; is this a llama2.c tokenizer file?");
  }
  while (at < bytes.size()) {
    const std::size_t id = t.pieces_.size();
    const std::int32_t score_bits = read_i32("score", id);
    float score = 0;
    std::memcpy(&score, &score_bits, 4);
    const std::int32_t len = read_i32("length", id);
    if (!std::isfinite(score)) {
      fail("tokenizer: '", file, "': token ", id, " has score ", score, "; scores must be finite");
    }
    if (len < 0 || len > t.max_token_length_) {
      fail("tokenizer: '", file, "': token ", id, " has length ", len,
           ", outside [0, max_token_length = ", t.max_token_length_,
           "]; is this a llama2.c tokenizer file?");
    }
    if (bytes.size() - at < static_cast<std::size_t>(len)) {
      fail("tokenizer: '", file, "' is truncated: token ", id, " needs ", len, " bytes at byte ",
           at, " but the file has ", bytes.size(), " bytes");
    }
    t.pieces_.emplace_back(bytes.data() + at, static_cast<std::size_t>(len));
    t.scores_.push_back(score);
    at += static_cast<std::size_t>(len);
  }

  if (t.vocab_size() < 3) {
    fail("tokenizer: '", file, "' has ", t.vocab_size(), " tokens; a llama2.c tokenizer has at "
         "least 3 (<unk>, BOS, EOS)");
  }
  t.finish({});
  return t;
}

inline Tokenizer Tokenizer::from_pieces(std::vector<std::string> pieces, std::vector<float> scores,
                                        std::vector<std::int32_t> token_types, int unk, int bos, int eos,
                                        std::string source) {
  const auto n = static_cast<std::int64_t>(pieces.size());
  if (n < 1) fail("tokenizer: '", source, "' has no tokens");
  if (n > (1 << 24)) fail("tokenizer: '", source, "' has ", n, " tokens, more than 2^24");
  if (scores.empty()) scores.assign(pieces.size(), 0.0f);
  if (scores.size() != pieces.size()) {
    fail("tokenizer: '", source, "' has ", pieces.size(), " tokens but ", scores.size(), " scores");
  }
  if (!token_types.empty() && token_types.size() != pieces.size()) {
    fail("tokenizer: '", source, "' has ", pieces.size(), " tokens but ", token_types.size(), " token types");
  }
  for (std::size_t i = 0; i < scores.size(); ++i) {
    if (!std::isfinite(scores[i])) fail("tokenizer: '", source, "': token ", i, " has score ", scores[i]);
  }
  auto check_id = [&](const char* what, int id, bool optional) {
    if ((optional && id == -1) || (id >= 0 && id < n)) return;
    fail("tokenizer: '", source, "': ", what, " id ", id, " is outside [0, ", n, ")");
  };
  check_id("<unk>", unk, true);
  check_id("BOS", bos, false);
  check_id("EOS", eos, false);
  Tokenizer t;
  t.source_ = std::move(source);
  t.pieces_ = std::move(pieces);
  t.scores_ = std::move(scores);
  t.unk_ = unk;
  t.bos_ = bos;
  t.eos_ = eos;
  for (const auto& p : t.pieces_) t.max_token_length_ = std::max(t.max_token_length_, static_cast<int>(p.size()));
  t.finish(std::move(token_types));
  return t;
}

inline void Tokenizer::finish(std::vector<std::int32_t> token_types) {
  const std::size_t n = pieces_.size();
  // "<0xNN>" (upper-case hex, as SentencePiece spells byte pieces) -> NN, else -1.
  auto byte_piece = [](const std::string& p) -> int {
    if (p.size() != 6 || p[0] != '<' || p[1] != '0' || p[2] != 'x' || p[5] != '>') return -1;
    auto hex = [](char c) { return c >= '0' && c <= '9' ? c - '0' : (c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1); };
    const int hi = hex(p[3]), lo = hex(p[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
  };
  byte_of_.assign(n, -1);
  byte_id_.fill(-1);
  types_.assign(n, TokenType::Normal);
  for (std::size_t id = 0; id < n; ++id) {
    const int b = byte_piece(pieces_[id]);
    if (!token_types.empty()) {
      const std::int32_t ty = token_types[id];
      if (ty < 0 || ty > 6) fail("tokenizer: '", source_, "': token ", id, " has token type ", ty, ", outside [0, 6]");
      types_[id] = static_cast<TokenType>(ty);
      if (types_[id] == TokenType::Byte && b < 0) {
        fail("tokenizer: '", source_, "': token ", id, " is a byte token but spelled '", pieces_[id],
             "', not <0xNN>");
      }
      if (types_[id] != TokenType::Byte) continue;
    } else if (static_cast<int>(id) == unk_) {
      types_[id] = TokenType::Unknown;
    } else if (static_cast<int>(id) == bos_ || static_cast<int>(id) == eos_) {
      types_[id] = TokenType::Control;
    }
    if (b >= 0) {
      types_[id] = TokenType::Byte;
      byte_of_[id] = b;
      if (byte_id_[static_cast<std::size_t>(b)] < 0) byte_id_[static_cast<std::size_t>(b)] = static_cast<int>(id);
    }
  }
  byte_fallback_ = std::all_of(byte_id_.begin(), byte_id_.end(), [](int id) { return id >= 0; });
  for (std::size_t id = 0; id < n; ++id) ids_.emplace(pieces_[id], static_cast<int>(id));  // first on repeats
  if (const auto space = find(" ")) space_id_ = *space;
  // Every way of splitting a piece into two pieces is a merge producing it. Byte pieces and
  // control tokens ("<s>") are not text.
  for (std::size_t id = 0; id < n; ++id) {
    if (byte_of_[id] >= 0 || types_[id] == TokenType::Control || types_[id] == TokenType::Unknown) continue;
    const std::string& p = pieces_[id];
    if (ids_.at(p) != static_cast<int>(id)) continue;  // a repeated piece: lookups resolve to the first id
    for (std::size_t k = 1; k < p.size(); ++k) {
      const auto left = ids_.find(p.substr(0, k));
      const auto right = ids_.find(p.substr(k));
      if (left != ids_.end() && right != ids_.end()) {
        merges_.emplace(pair_key(left->second, right->second), static_cast<int>(id));
      }
    }
  }
}

inline std::vector<int> Tokenizer::encode(std::string_view text, bool bos) const {
  std::vector<int> initial;
  initial.reserve(text.size() + 2);
  if (!text.empty()) {
    if (space_id_ < 0) {
      fail("tokenizer: '", source_, "' has no piece \" \" for the dummy prefix; cannot encode");
    }
    initial.push_back(space_id_);
  }
  auto is_continuation = [](char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; };
  for (std::size_t i = 0; i < text.size();) {
    std::size_t j = i + 1;
    while (j < text.size() && j - i < 4 && is_continuation(text[j])) ++j;
    const auto it = ids_.find(std::string(text.substr(i, j - i)));
    if (it != ids_.end() && byte_of_[static_cast<std::size_t>(it->second)] < 0) {
      initial.push_back(it->second);
    } else if (byte_fallback_) {
      for (std::size_t b = i; b < j; ++b) initial.push_back(byte_id_[static_cast<unsigned char>(text[b])]);
    } else if (unk_ >= 0) {
      initial.push_back(unk_);
    } else {
      std::string hex;
      for (std::size_t b = i; b < j; ++b) hex += str_cat(b > i ? " " : "", "0x", "0123456789ABCDEF"[static_cast<unsigned char>(text[b]) >> 4],
                                                          "0123456789ABCDEF"[static_cast<unsigned char>(text[b]) & 15]);
      fail("tokenizer: '", source_, "' cannot encode the character '", text.substr(i, j - i), "' (bytes ", hex,
           ") at byte ", i, " of the text: no piece spells it, and the vocabulary has neither byte-fallback "
           "pieces nor an <unk> token");
    }
    i = j;
  }

  // Greedy highest-score merging over a doubly linked list, with a max-heap of candidate
  // pairs ordered by (score desc, left position asc). This picks the same pair as scanning all
  // adjacent pairs for the highest score (leftmost on ties) after every merge, in O(n log n).
  // A heap entry is stale when its left node died or changed, or its right neighbour changed.
  const std::size_t n = initial.size();
  std::vector<int> id(initial);
  std::vector<std::ptrdiff_t> prev(n), next(n);
  std::vector<bool> alive(n, true);
  for (std::size_t i = 0; i < n; ++i) {
    prev[i] = static_cast<std::ptrdiff_t>(i) - 1;
    next[i] = (i + 1 < n) ? static_cast<std::ptrdiff_t>(i + 1) : -1;
  }
  struct Candidate {
    float score;
    std::ptrdiff_t left;
    int left_id;
    int right_id;
    int merged;
  };
  auto lower_priority = [](const Candidate& a, const Candidate& b) {
    if (a.score != b.score) return a.score < b.score;
    return a.left > b.left;
  };
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(lower_priority)> heap(
      lower_priority);
  auto push_pair = [&](std::ptrdiff_t left) {
    if (left < 0) return;
    const std::ptrdiff_t right = next[static_cast<std::size_t>(left)];
    if (right < 0) return;
    const int a = id[static_cast<std::size_t>(left)];
    const int b = id[static_cast<std::size_t>(right)];
    const auto it = merges_.find(pair_key(a, b));
    if (it == merges_.end()) return;
    heap.push({scores_[static_cast<std::size_t>(it->second)], left, a, b, it->second});
  };
  for (std::size_t i = 0; i + 1 < n; ++i) push_pair(static_cast<std::ptrdiff_t>(i));
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    const auto l = static_cast<std::size_t>(c.left);
    if (!alive[l] || id[l] != c.left_id || next[l] < 0) continue;
    const auto r = static_cast<std::size_t>(next[l]);
    if (id[r] != c.right_id) continue;
    id[l] = c.merged;
    alive[r] = false;
    next[l] = next[r];
    if (next[r] >= 0) prev[static_cast<std::size_t>(next[r])] = c.left;
    push_pair(prev[l]);
    push_pair(c.left);
  }

  std::vector<int> out;
  out.reserve(n + 1);
  if (bos) out.push_back(bos_);
  for (std::ptrdiff_t i = n > 0 ? 0 : -1; i >= 0; i = next[static_cast<std::size_t>(i)]) {
    out.push_back(id[static_cast<std::size_t>(i)]);
  }
  return out;
}

}  // namespace qtl::model

// qtl/model/tokenizer.hpp — the llama2.c tokenizer (SentencePiece BPE exported by llama2.c).
//
// File format (little-endian): int32 max_token_length, then for every token in id order:
// float32 score, int32 byte length n, n bytes (the piece, not NUL-terminated). The number of
// tokens is not stored: the file is read to its end. Ids 0, 1, 2 are <unk>, BOS, EOS and ids
// 3..258 are the byte-fallback pieces "<0x00>".."<0xFF>" (byte b is id b + 3).
//
// encode(text):
//   1. [BOS] if requested; then, when text is non-empty, the piece " " (the "dummy prefix"
//      SentencePiece adds so that a first word is tokenized like a word after a space);
//   2. each UTF-8 character (a lead byte plus up to 3 continuation bytes 10xxxxxx) becomes its
//      piece's id, or, when no piece spells it, one byte-fallback id (byte + 3) per byte;
//   3. repeatedly merge the adjacent pair whose concatenation is a piece with the highest
//      score, the leftmost pair on ties, until no adjacent pair concatenates to a piece.
// decode(ids) inverts it: BOS and EOS produce nothing, the leading space of the piece right
// after BOS is dropped (the dummy prefix), and "<0xNN>" pieces produce the byte 0xNN. So
// decode(encode(s)) == s for every s, and decode(encode(s, false)) == " " + s for non-empty s.
#pragma once

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
#include "qtl/io/data_path.hpp"

namespace qtl::model {

class Tokenizer {
 public:
  static constexpr int kUnk = 0;
  static constexpr int kBos = 1;
  static constexpr int kEos = 2;
  /// Byte b is encoded as id b + kByteOffset when no piece spells its character.
  static constexpr int kByteOffset = 3;

  /// Reads and validates a tokenizer file. Throws qtl::Error when the file is missing or
  /// truncated, a length or score is invalid, or ids 3..258 are not the byte pieces.
  [[nodiscard]] static Tokenizer load(const std::filesystem::path& path);

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
    if (id == kBos || id == kEos) return {};
    const auto i = static_cast<std::size_t>(id);
    if (byte_of_[i] >= 0) return std::string(1, static_cast<char>(byte_of_[i]));
    const std::string& p = pieces_[i];
    if (previous == kBos && !p.empty() && p.front() == ' ') return p.substr(1);
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

  std::string source_;
  int max_token_length_ = 0;
  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::vector<int> byte_of_;  // byte value of "<0xNN>" pieces at ids 3..258, else -1
  std::unordered_map<std::string, int> ids_;
  // (left id, right id) -> id of the piece spelled by their concatenation: every merge there is.
  std::unordered_map<std::uint64_t, int> merges_;
  int space_id_ = -1;  // the dummy-prefix piece " ", -1 if the vocabulary lacks it
};

inline Tokenizer Tokenizer::load(const std::filesystem::path& path) {
  const std::string file = path.string();
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    fail("tokenizer: file '", file, "' not found. qtl's bundled tokenizer: ",
         io::describe_data_file("tok512.bin"),
         ". Select a tokenizer with the path argument, or point QTL_DATA_DIR (environment "
         "variable or compile definition) at the data folder holding stories260K/tok512.bin");
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

  constexpr int kMinVocab = kByteOffset + 256;
  if (t.vocab_size() < kMinVocab) {
    fail("tokenizer: '", file, "' has ", t.vocab_size(), " tokens; a llama2.c tokenizer has at "
         "least ", kMinVocab, " (<unk>, BOS, EOS and 256 byte tokens)");
  }
  t.byte_of_.assign(t.pieces_.size(), -1);
  for (int b = 0; b < 256; ++b) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    const std::string expected = {'<', '0', 'x', kHex[b >> 4], kHex[b & 15], '>'};
    const std::string& got = t.pieces_[static_cast<std::size_t>(b + kByteOffset)];
    if (got != expected) {
      fail("tokenizer: '", file, "': token ", b + kByteOffset, " is '", got, "' but must be the "
           "byte-fallback piece '", expected, "'; is this a llama2.c tokenizer file?");
    }
    t.byte_of_[static_cast<std::size_t>(b + kByteOffset)] = b;
  }

  for (int id = 0; id < t.vocab_size(); ++id) {
    t.ids_.emplace(t.pieces_[static_cast<std::size_t>(id)], id);  // keeps the first on repeats
  }
  if (const auto space = t.find(" ")) t.space_id_ = *space;
  // Every way of splitting a piece into two pieces is a merge producing it.
  for (int id = 0; id < t.vocab_size(); ++id) {
    if (t.byte_of_[static_cast<std::size_t>(id)] >= 0) continue;  // "<0xNN>" is not text
    const std::string& p = t.pieces_[static_cast<std::size_t>(id)];
    if (t.ids_.at(p) != id) continue;  // a repeated piece: lookups resolve to the first id
    for (std::size_t k = 1; k < p.size(); ++k) {
      const auto left = t.ids_.find(p.substr(0, k));
      const auto right = t.ids_.find(p.substr(k));
      if (left != t.ids_.end() && right != t.ids_.end()) {
        t.merges_.emplace(pair_key(left->second, right->second), id);
      }
    }
  }
  return t;
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
    if (it != ids_.end()) {
      initial.push_back(it->second);
    } else {
      for (std::size_t b = i; b < j; ++b) {
        initial.push_back(static_cast<unsigned char>(text[b]) + kByteOffset);
      }
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
  if (bos) out.push_back(kBos);
  for (std::ptrdiff_t i = n > 0 ? 0 : -1; i >= 0; i = next[static_cast<std::size_t>(i)]) {
    out.push_back(id[static_cast<std::size_t>(i)]);
  }
  return out;
}

}  // namespace qtl::model

#include "qtl/model/tokenizer.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "data_path.hpp"
#include "qtl/model/eval.hpp"
#include "temp_dir.hpp"

namespace {

namespace fs = std::filesystem;
using qtl::model::Tokenizer;

const Tokenizer& real_tokenizer() {
  static const Tokenizer tok = Tokenizer::load(qtl::io::data_path("stories260K/tok512.bin"));
  return tok;
}

int id_of(const Tokenizer& tok, std::string_view piece) {
  const auto id = tok.find(piece);
  EXPECT_TRUE(id.has_value()) << "no piece '" << piece << "'";
  return id.value_or(-1);
}

/// encode() exactly as data/README.md words it, with no cleverness: after every merge, scan all
/// adjacent pairs and merge the one whose concatenation is a piece with the highest score
/// (the leftmost on ties). O(n²) per call; the tokenizer's heap-based merge must agree with it.
std::vector<int> reference_encode(const Tokenizer& tok, std::string_view text) {
  std::vector<int> ids = {Tokenizer::kBos};
  if (text.empty()) return ids;
  ids.push_back(id_of(tok, " "));
  for (std::size_t i = 0; i < text.size();) {
    std::size_t j = i + 1;
    while (j < text.size() && j - i < 4 && (static_cast<unsigned char>(text[j]) & 0xC0) == 0x80) {
      ++j;
    }
    if (const auto id = tok.find(text.substr(i, j - i))) {
      ids.push_back(*id);
    } else {
      for (std::size_t b = i; b < j; ++b) ids.push_back(static_cast<unsigned char>(text[b]) + 3);
    }
    i = j;
  }
  while (true) {
    float best_score = -std::numeric_limits<float>::infinity();
    std::size_t best = 0;
    int best_id = -1;
    for (std::size_t i = 1; i + 1 < ids.size(); ++i) {  // ids[0] is BOS, never merged
      const auto merged = tok.find(tok.piece(ids[i]) + tok.piece(ids[i + 1]));
      if (merged && tok.score(*merged) > best_score) {
        best_score = tok.score(*merged);
        best = i;
        best_id = *merged;
      }
    }
    if (best_id < 0) break;
    ids[best] = best_id;
    ids.erase(ids.begin() + static_cast<std::ptrdiff_t>(best) + 1);
  }
  return ids;
}

// ---- files written for bad-input tests ----------------------------------------------------

using qtl::test::TempDir;

struct Entry {
  Entry(std::string p = {}, float s = 0.0f, std::optional<std::int32_t> len = std::nullopt)
      : piece(std::move(p)), score(s), length(len) {}
  std::string piece;
  float score;
  std::optional<std::int32_t> length;  // the stored length; default: the piece's size
};

/// <unk>, BOS, EOS and the 256 byte pieces: the smallest valid llama2.c vocabulary.
std::vector<Entry> base_vocab() {
  std::vector<Entry> v = {{"<unk>"}, {"\n<s>\n"}, {"\n</s>\n"}};
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    v.push_back({buf});
  }
  return v;
}

void write_tokenizer(const fs::path& path, std::int32_t max_len, const std::vector<Entry>& v) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(&max_len), 4);
  for (const Entry& e : v) {
    const std::int32_t len = e.length.value_or(static_cast<std::int32_t>(e.piece.size()));
    out.write(reinterpret_cast<const char*>(&e.score), 4);
    out.write(reinterpret_cast<const char*>(&len), 4);
    out.write(e.piece.data(), static_cast<std::streamsize>(e.piece.size()));
  }
}

std::string load_error(const fs::path& path) {
  try {
    (void)Tokenizer::load(path);
  } catch (const qtl::Error& e) {
    return e.what();
  }
  return "<no error>";
}

// ---- the real tokenizer -------------------------------------------------------------------

TEST(Tokenizer, LoadsRealVocabulary) {
  const Tokenizer& tok = real_tokenizer();
  EXPECT_EQ(tok.vocab_size(), 512);
  EXPECT_EQ(tok.max_token_length(), 7);
  EXPECT_EQ(tok.piece(Tokenizer::kBos), "\n<s>\n");
  EXPECT_EQ(tok.piece(3), "<0x00>");
  EXPECT_EQ(tok.piece(13), "<0x0A>");
  EXPECT_EQ(tok.piece(258), "<0xFF>");
  EXPECT_NO_THROW(tok.require_vocab_size(512));
}

TEST(Tokenizer, EmptyTextIsBosOnly) {
  const Tokenizer& tok = real_tokenizer();
  EXPECT_EQ(tok.encode(""), std::vector<int>({Tokenizer::kBos}));
  EXPECT_TRUE(tok.encode("", /*bos=*/false).empty());
}

TEST(Tokenizer, FixedStringsDerivedFromTheFormat) {
  const Tokenizer& tok = real_tokenizer();

  // "The": dummy prefix, then characters [" ", "T", "h", "e"]. Adjacent pairs that are pieces:
  // " T" and "he" ("Th" is not one); "he" scores higher, so [" ", "T", "he"]; then only " T"
  // applies ("The" is not a piece): [" T", "he"]; then " T"+"he" = " The": [" The"].
  EXPECT_FALSE(tok.find("Th").has_value());
  EXPECT_FALSE(tok.find("The").has_value());
  EXPECT_GT(tok.score(id_of(tok, "he")), tok.score(id_of(tok, " T")));
  EXPECT_EQ(tok.encode("The"), std::vector<int>({Tokenizer::kBos, id_of(tok, " The")}));
  EXPECT_EQ(tok.encode("The", /*bos=*/false), std::vector<int>({id_of(tok, " The")}));

  // "a\nb": [" ", "a", "\n", "b"]; "\n" has no piece, so byte fallback gives id 0x0A + 3 = 13.
  // The only mergeable pair is " "+"a" (no piece starts or ends with a newline byte token).
  EXPECT_FALSE(tok.find("\n").has_value());
  EXPECT_FALSE(tok.find("a<0x0A>").has_value());
  EXPECT_EQ(tok.encode("a\nb"),
            std::vector<int>({Tokenizer::kBos, id_of(tok, " a"), 0x0A + 3, id_of(tok, "b")}));

  // "é" (2 bytes) has its own piece; " é" does not: [" ", "é"].
  EXPECT_FALSE(tok.find(" \xC3\xA9").has_value());
  EXPECT_EQ(tok.encode("\xC3\xA9"),
            std::vector<int>({Tokenizer::kBos, id_of(tok, " "), id_of(tok, "\xC3\xA9")}));

  // U+1F642 (4 bytes F0 9F 99 82) has no piece: four byte-fallback ids, byte + 3.
  EXPECT_FALSE(tok.find("\xF0\x9F\x99\x82").has_value());
  EXPECT_EQ(tok.encode("\xF0\x9F\x99\x82"),
            std::vector<int>({Tokenizer::kBos, id_of(tok, " "), 0xF0 + 3, 0x9F + 3, 0x99 + 3,
                              0x82 + 3}));
}

TEST(Tokenizer, NoBytePieceIsAConcatenationOfTwoPieces) {
  // The tokenizer never merges into a "<0xNN>" piece; on this vocabulary that is no restriction,
  // so it agrees with llama2.c's string-concatenation merge rule exactly.
  const Tokenizer& tok = real_tokenizer();
  for (int id = 3; id < 259; ++id) {
    const std::string& p = tok.piece(id);
    for (std::size_t k = 1; k < p.size(); ++k) {
      EXPECT_FALSE(tok.find(p.substr(0, k)) && tok.find(p.substr(k))) << p;
    }
  }
}

TEST(Tokenizer, MatchesQuadraticReferenceOnDevStoriesAndOddInputs) {
  const Tokenizer& tok = real_tokenizer();
  const auto stories = qtl::model::load_stories(qtl::io::data_path("tinystories_val_dev.txt"));
  ASSERT_EQ(stories.size(), 500u);
  for (std::size_t i = 0; i < stories.size(); i += 10) {
    EXPECT_EQ(tok.encode(stories[i]), reference_encode(tok, stories[i])) << "story " << i;
  }
  const std::vector<std::string> odd = {
      " ", "  ", "\n", " leading space", "trailing  ", "a\n\nb",
      std::string("nul\0byte", 8), "\x80\x80 lone continuation bytes", "\xC3 truncated lead",
      "\xF0\x9F\x99\x82\x82 five-byte run", "aaaaaaaaaaaaaaaaaaaa", "the the the the the",
      "\xE2\x80\x9C" "quoted" "\xE2\x80\x9D", "\xC3\xA2\xE2\x82\xAC\xE2\x84\xA2"};
  for (const std::string& s : odd) {
    EXPECT_EQ(tok.encode(s), reference_encode(tok, s)) << "'" << s << "'";
  }
}

TEST(Tokenizer, DecodeInvertsEncodeOnDevText) {
  const Tokenizer& tok = real_tokenizer();
  const auto stories = qtl::model::load_stories(qtl::io::data_path("tinystories_val_dev.txt"));
  for (std::size_t i = 0; i < stories.size(); ++i) {
    ASSERT_EQ(tok.decode(tok.encode(stories[i])), stories[i]) << "story " << i;
  }
  for (const std::string s : {" x", "\nx", "  two", "\xF0\x9F\x99\x82", "\x80\xFF raw"}) {
    EXPECT_EQ(tok.decode(tok.encode(s)), s);
  }
}

TEST(Tokenizer, DecodeRules) {
  const Tokenizer& tok = real_tokenizer();
  const int the = id_of(tok, " The");
  EXPECT_EQ(tok.decode(std::vector<int>{Tokenizer::kBos, the}), "The");  // dummy prefix dropped
  EXPECT_EQ(tok.decode(std::vector<int>{the}), " The");                 // no BOS: kept
  EXPECT_EQ(tok.decode(std::vector<int>{the, the}), " The The");
  EXPECT_EQ(tok.decode(std::vector<int>{Tokenizer::kBos, 0x0A + 3, Tokenizer::kEos}), "\n");
  EXPECT_EQ(tok.decode_token(the, the), " The");
  EXPECT_EQ(tok.decode_token(Tokenizer::kBos, the), "The");
  try {
    (void)tok.decode(std::vector<int>{the, 512});
    FAIL() << "expected qtl::Error";
  } catch (const qtl::Error& e) {
    EXPECT_NE(std::string(e.what()).find("token id 512 is outside [0, 512)"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW((void)tok.decode(std::vector<int>{-1}), qtl::Error);
}

TEST(Tokenizer, VocabMismatchWithModelIsNamed) {
  try {
    real_tokenizer().require_vocab_size(32000);
    FAIL() << "expected qtl::Error";
  } catch (const qtl::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("has 512 tokens"), std::string::npos) << msg;
    EXPECT_NE(msg.find("vocab_size is 32000"), std::string::npos) << msg;
  }
}

// ---- small tokenizers written by the test -------------------------------------------------

TEST(Tokenizer, SmallVocabularyMergesByScoreAndLeftmostOnTies) {
  TempDir dir;
  auto v = base_vocab();
  v.push_back({" ", -10.0f});
  v.push_back({"a", -10.0f});
  v.push_back({"b", -10.0f});
  v.push_back({"ab", -1.0f});   // 262: best pair
  v.push_back({"ba", -1.0f});   // 263: same score as "ab"
  v.push_back({" a", -5.0f});   // 264
  write_tokenizer(dir.file("t.bin"), 6, v);
  const Tokenizer tok = Tokenizer::load(dir.file("t.bin"));
  ASSERT_EQ(tok.vocab_size(), 265);
  // "aba": [" ", "a", "b", "a"]; "ab" and "ba" tie at -1, leftmost wins: [" ", "ab", "a"];
  // then " "+"ab" and "ab"+"a" are not pieces: done.
  EXPECT_EQ(tok.encode("aba"), std::vector<int>({1, 259, 262, 260}));
  // "bab": [" ", "b", "a", "b"]: "ba" is leftmost of the tied pair: [" ", "ba", "b"].
  EXPECT_EQ(tok.encode("bab"), std::vector<int>({1, 259, 263, 261}));
  // "a": [" ", "a"] -> " a".
  EXPECT_EQ(tok.encode("a"), std::vector<int>({1, 264}));
  // "c" has no piece: byte fallback 'c' + 3.
  EXPECT_EQ(tok.encode("c"), std::vector<int>({1, 259, 'c' + 3}));
  EXPECT_EQ(tok.decode(tok.encode("abac")), "abac");
}

TEST(Tokenizer, MissingFileNamesThePath) {
  TempDir dir;
  const std::string msg = load_error(dir.file("my_tokenizer.bin"));
  EXPECT_NE(msg.find("not found"), std::string::npos) << msg;
  EXPECT_NE(msg.find(dir.file("my_tokenizer.bin").string()), std::string::npos) << msg;
}

TEST(Tokenizer, EmptyAndTruncatedFiles) {
  TempDir dir;
  { std::ofstream(dir.file("empty.bin"), std::ios::binary); }
  EXPECT_NE(load_error(dir.file("empty.bin")).find("has 0 bytes"), std::string::npos);

  std::ifstream in(qtl::io::data_path("stories260K/tok512.bin"), std::ios::binary);
  std::string bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  bytes.resize(bytes.size() - 2);  // cut the last piece short
  {
    std::ofstream out(dir.file("cut.bin"), std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  const std::string msg = load_error(dir.file("cut.bin"));
  EXPECT_NE(msg.find("truncated: token 511"), std::string::npos) << msg;
}

TEST(Tokenizer, ModelFileIsRejectedAsWrongFormat) {
  const std::string msg = load_error(qtl::io::data_path("stories260K/stories260K.bin"));
  EXPECT_NE(msg.find("llama2.c tokenizer"), std::string::npos) << msg;
}

TEST(Tokenizer, InvalidEntries) {
  TempDir dir;
  write_tokenizer(dir.file("maxlen.bin"), 0, base_vocab());
  EXPECT_NE(load_error(dir.file("maxlen.bin")).find("max_token_length = 0"), std::string::npos);

  auto v = base_vocab();
  v.push_back({"toolong", 0.0f});
  write_tokenizer(dir.file("long.bin"), 6, v);
  std::string msg = load_error(dir.file("long.bin"));
  EXPECT_NE(msg.find("token 259 has length 7"), std::string::npos) << msg;

  v = base_vocab();
  v.push_back({"x", 0.0f, -3});
  write_tokenizer(dir.file("neg.bin"), 6, v);
  msg = load_error(dir.file("neg.bin"));
  EXPECT_NE(msg.find("token 259 has length -3"), std::string::npos) << msg;

  v = base_vocab();
  v[100].score = std::numeric_limits<float>::quiet_NaN();
  write_tokenizer(dir.file("nan.bin"), 6, v);
  msg = load_error(dir.file("nan.bin"));
  EXPECT_NE(msg.find("token 100 has score nan"), std::string::npos) << msg;

  v = base_vocab();
  v.resize(2);
  write_tokenizer(dir.file("tiny.bin"), 6, v);
  msg = load_error(dir.file("tiny.bin"));
  EXPECT_NE(msg.find("has 2 tokens"), std::string::npos) << msg;
}

// Vocabularies trained without byte fallback are valid: small SentencePiece models (a few
// hundred or a hundred pieces) have no "<0xNN>" pieces, and a character no piece spells
// becomes <unk> (id 0), never an id outside the vocabulary.
TEST(Tokenizer, VocabulariesWithoutByteFallbackLoad) {
  TempDir dir;
  auto v = base_vocab();
  v.resize(100);  // <unk>, BOS, EOS and 97 byte pieces: not a full byte fallback
  v.push_back({" ", 0.0f});
  write_tokenizer(dir.file("small.bin"), 6, v);
  const Tokenizer small = Tokenizer::load(dir.file("small.bin"));
  EXPECT_EQ(small.vocab_size(), 101);
  EXPECT_FALSE(small.byte_fallback());
  for (int id : small.encode("x\xC3\xA9")) EXPECT_LT(id, 101);
  EXPECT_EQ(small.encode("\xC3\xA9"), std::vector<int>({1, 100, 0}));  // " " then <unk>

  v = base_vocab();
  v[3 + 0x41].piece = "A";  // byte 0x41 spelled as a piece: no byte fallback for it
  write_tokenizer(dir.file("bytes.bin"), 6, v);
  const Tokenizer t = Tokenizer::load(dir.file("bytes.bin"));
  EXPECT_FALSE(t.byte_fallback());
  EXPECT_EQ(t.find("A"), 3 + 0x41);
}

TEST(Tokenizer, VocabularyWithoutSpacePieceCannotEncodeText) {
  TempDir dir;
  write_tokenizer(dir.file("nospace.bin"), 6, base_vocab());
  const Tokenizer tok = Tokenizer::load(dir.file("nospace.bin"));
  EXPECT_EQ(tok.encode(""), std::vector<int>({1}));
  EXPECT_THROW((void)tok.encode("x"), qtl::Error);
}

}  // namespace

// qtl/io/gguf.hpp — reader and writer for GGUF, llama.cpp's model file format (versions 2 and 3).
//
// Format source: llama.cpp, ggml/include/gguf.h (the layout comment), ggml/src/gguf.cpp and
// gguf-py/gguf/constants.py. All numbers are little-endian:
//   header   "GGUF" (4 bytes), version u32, tensor count u64, metadata kv count u64
//            (version 1 stored the counts as u32 and is not read here)
//   kv       key string, value type u32, value
//            string = length u64 + bytes (no terminator); bool = one byte, 0 or 1;
//            array  = element type u32, count u64, then `count` values of that type (an array's
//                     elements may themselves be arrays, each with its own type and count)
//   tensor   name string, n_dims u32 (<= 4), n_dims x u64 dims (ne0 = row length first),
//   info     ggml type u32 (enum ggml_type), offset u64 (from the start of the data section)
//   data     starts at the first multiple of `general.alignment` (a u32 key, default 32)
//            after the infos; every tensor offset is a multiple of the alignment.
// llama.cpp's writer lays the tensors out back to back in info order, each padded to the
// alignment with zero bytes; qtl's Writer does the same.
//
// Reading validates every count, length, dimension, offset and size before it is used (with
// overflow-checked arithmetic) and throws qtl::Error naming the file, the field and its value;
// malformed input never reads outside the bytes and never misreads silently. The parser works
// on a byte span: File::open memory-maps the file read-only and parses the mapping;
// File::from_memory parses caller-owned bytes.
//
// Metadata is decoded into Values (tensor data stays in the mapping): an array element costs
// sizeof(Value) (40 bytes) in memory, so a file's arrays take at most 40x their bytes in the
// file (a tokenizer's 150k strings: a few MB). Counts are checked against the bytes left before
// anything is allocated.
//
// Plain I/O: the standard library and POSIX only (no Eigen). Little-endian hosts only.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iterator>
#include <limits>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "qtl/core/error.hpp"
#include "qtl/quant/ggml_types.hpp"

namespace qtl::gguf {

static_assert(std::endian::native == std::endian::little,
              "qtl::gguf reads and writes little-endian GGUF files on little-endian hosts only");

/// The metadata value types, numbered as GGUF stores them (enum gguf_type).
enum class ValueType : std::uint32_t {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  Bool = 7,
  String = 8,
  Array = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12,
};
inline constexpr std::uint32_t kValueTypeCount = 13;

/// GGUF's names of the value types (gguf-py's GGUFValueType, lower case).
[[nodiscard]] constexpr std::string_view value_type_name(ValueType t) noexcept {
  constexpr std::array<std::string_view, kValueTypeCount> kNames = {
      "uint8", "int8",   "uint16", "int16", "uint32", "int32", "float32",
      "bool",  "string", "array",  "uint64", "int64", "float64"};
  const auto i = static_cast<std::uint32_t>(t);
  return i < kValueTypeCount ? kNames[i] : std::string_view("unknown");
}

struct Value;

/// An array value: every item holds a value of type `type` (itself possibly an array; GGUF
/// allows arrays of arrays, but llama.cpp's reader refuses them).
struct Array {
  ValueType type = ValueType::U8;
  std::vector<Value> items;

  /// An array of the elements of `range` (a range of one of Value's alternatives, e.g. floats
  /// or std::strings).
  template <class Range>
  [[nodiscard]] static Array of(const Range& range);
};

/// One metadata value. The variant's index is the GGUF value type number.
struct Value {
  using Variant = std::variant<std::uint8_t, std::int8_t, std::uint16_t, std::int16_t, std::uint32_t,
                               std::int32_t, float, bool, std::string, Array, std::uint64_t,
                               std::int64_t, double>;
  Variant v;

  Value() = default;
  template <class T>
    requires(!std::is_same_v<std::remove_cvref_t<T>, Value> && std::is_constructible_v<Variant, T &&>)
  Value(T&& x) : v(std::forward<T>(x)) {}  // NOLINT: implicit on purpose (Writer::set(key, 3.5f))

  [[nodiscard]] ValueType type() const noexcept { return static_cast<ValueType>(v.index()); }
};

inline bool operator==(const Array& a, const Array& b);
inline bool operator==(const Value& a, const Value& b) { return a.v == b.v; }
inline bool operator==(const Array& a, const Array& b) { return a.type == b.type && a.items == b.items; }

/// The ValueType of a C++ type that Value holds (uint8_t -> U8, std::string -> String, ...).
template <class T>
[[nodiscard]] consteval ValueType value_type_of() {
  using U = std::remove_cvref_t<T>;
  if constexpr (std::is_same_v<U, std::uint8_t>) return ValueType::U8;
  else if constexpr (std::is_same_v<U, std::int8_t>) return ValueType::I8;
  else if constexpr (std::is_same_v<U, std::uint16_t>) return ValueType::U16;
  else if constexpr (std::is_same_v<U, std::int16_t>) return ValueType::I16;
  else if constexpr (std::is_same_v<U, std::uint32_t>) return ValueType::U32;
  else if constexpr (std::is_same_v<U, std::int32_t>) return ValueType::I32;
  else if constexpr (std::is_same_v<U, float>) return ValueType::F32;
  else if constexpr (std::is_same_v<U, bool>) return ValueType::Bool;
  else if constexpr (std::is_same_v<U, std::string>) return ValueType::String;
  else if constexpr (std::is_same_v<U, Array>) return ValueType::Array;
  else if constexpr (std::is_same_v<U, std::uint64_t>) return ValueType::U64;
  else if constexpr (std::is_same_v<U, std::int64_t>) return ValueType::I64;
  else if constexpr (std::is_same_v<U, double>) return ValueType::F64;
  else static_assert(sizeof(U) == 0, "GGUF has no value type for this C++ type");
}

template <class Range>
Array Array::of(const Range& range) {
  using T = std::remove_cvref_t<decltype(*std::begin(range))>;
  using Stored = std::conditional_t<std::is_convertible_v<T, std::string_view> &&
                                        !std::is_same_v<T, std::string>,
                                    std::string, T>;
  Array a{value_type_of<Stored>(), {}};
  for (const auto& x : range) a.items.emplace_back(Stored(x));
  return a;
}

/// One metadata entry, in file order.
struct KeyValue {
  std::string key;
  Value value;
};

/// A tensor's description from the file's tensor infos.
struct TensorInfo {
  std::string name;
  ggml::Type type = ggml::Type::F32;
  std::vector<std::int64_t> shape;  ///< ggml's ne: shape[0] is the row length; 0..4 entries
  std::int64_t n_elements = 0;
  std::uint64_t offset = 0;   ///< from the start of the data section
  std::uint64_t n_bytes = 0;  ///< n_elements / block_size * type_size
};

/// A tensor and its bytes, which point into the File (valid while the File lives).
struct TensorView {
  std::string_view name;
  ggml::Type type = ggml::Type::F32;
  std::span<const std::int64_t> shape;
  std::int64_t n_elements = 0;
  std::span<const std::byte> bytes;
};

/// "general.alignment": the one metadata key whose value changes the layout.
inline constexpr std::string_view kAlignmentKey = "general.alignment";
inline constexpr std::uint32_t kDefaultAlignment = 32;
/// llama.cpp keeps tensor names in a char[64] with its terminator: longer names do not load there.
inline constexpr std::size_t kMaxTensorName = 63;
inline constexpr int kMaxDims = 4;
/// Arrays of arrays deeper than this are refused (bounds the parser's recursion).
inline constexpr int kMaxArrayDepth = 16;

namespace detail {

/// Lets the name indexes look up string_views without building strings.
struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};
using NameIndex = std::unordered_map<std::string, std::size_t, StringHash, std::equal_to<>>;

[[nodiscard]] constexpr bool is_integer_type(ValueType t) noexcept {
  switch (t) {
    case ValueType::U8: case ValueType::I8: case ValueType::U16: case ValueType::I16:
    case ValueType::U32: case ValueType::I32: case ValueType::U64: case ValueType::I64:
      return true;
    default:
      return false;
  }
}

[[nodiscard]] inline std::string array_description(const Array& a) {
  return str_cat("array of ", value_type_name(a.type));
}

[[nodiscard]] inline std::string type_description(const Value& v) {
  if (const auto* a = std::get_if<Array>(&v.v)) return array_description(*a);
  return std::string(value_type_name(v.type()));
}

/// The fewest bytes one value of type `t` occupies in a file (an array: its type and count).
[[nodiscard]] constexpr std::uint64_t min_value_bytes(ValueType t) noexcept {
  switch (t) {
    case ValueType::U8: case ValueType::I8: case ValueType::Bool: return 1;
    case ValueType::U16: case ValueType::I16: return 2;
    case ValueType::U32: case ValueType::I32: case ValueType::F32: return 4;
    case ValueType::U64: case ValueType::I64: case ValueType::F64: return 8;
    case ValueType::String: return 8;
    case ValueType::Array: return 12;
  }
  return 1;
}

[[nodiscard]] constexpr std::uint64_t align_up(std::uint64_t x, std::uint64_t alignment) noexcept {
  return (x + alignment - 1) / alignment * alignment;  // callers keep x + alignment in range
}

/// A tensor's byte count from its type and shape, or an Error naming the tensor and the field
/// at fault. `where` prefixes the message ("gguf: 'model.gguf': ").
struct TensorSize {
  std::int64_t n_elements = 0;
  std::uint64_t n_bytes = 0;
};
[[nodiscard]] inline TensorSize tensor_size(const std::string& where, std::string_view name,
                                            ggml::Type type, std::span<const std::int64_t> shape) {
  const ggml::TypeInfo info = ggml::type_info(type);
  std::int64_t n = 1;
  for (std::size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] < 0) {
      fail(where, "tensor '", name, "': dimension ", d, " is ", shape[d], ", must be >= 0");
    }
    if (__builtin_mul_overflow(n, shape[d], &n)) {
      std::string dims;
      for (std::size_t k = 0; k < shape.size(); ++k) dims += str_cat(k ? " x " : "", shape[k]);
      fail(where, "tensor '", name, "': the element count of the shape ", dims,
           " overflows 64 bits");
    }
  }
  const std::int64_t row = shape.empty() ? 1 : shape[0];
  if (row % info.block_size != 0) {
    fail(where, "tensor '", name, "': row length ne0 = ", row, " is not a multiple of ",
         info.name, "'s block size ", info.block_size);
  }
  std::int64_t bytes = 0;
  if (__builtin_mul_overflow(n / info.block_size, info.type_size, &bytes)) {
    fail(where, "tensor '", name, "': its size in bytes (", n / info.block_size, " blocks of ",
         info.type_size, " bytes) overflows 64 bits");
  }
  return {n, static_cast<std::uint64_t>(bytes)};
}

/// Reads little-endian fields from a byte span; every read checks the bytes left first.
class GgufParser {
 public:
  GgufParser(std::span<const std::byte> bytes, std::string where)
      : bytes_(bytes), where_(std::move(where)) {}

  [[nodiscard]] std::uint64_t pos() const noexcept { return pos_; }
  [[nodiscard]] std::uint64_t left() const noexcept { return bytes_.size() - pos_; }
  [[nodiscard]] const std::string& where() const noexcept { return where_; }

  /// What is being read, for messages ("key 3 'general.name'"); set before each entry.
  void set_context(std::string context) { context_ = std::move(context); }

  template <class... Args>
  [[noreturn]] void error(const Args&... args) const {
    fail(where_, context_, context_.empty() ? "" : ": ", args...);
  }

  void need(std::uint64_t n, std::string_view field) const {
    if (n > left()) {
      error(field, " needs ", n, " bytes at offset ", pos_, ", but the file ends at ",
            bytes_.size(), " (truncated file?)");
    }
  }

  template <class T>
  [[nodiscard]] T read(std::string_view field) {
    need(sizeof(T), field);
    T x;
    std::memcpy(&x, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return x;
  }

  [[nodiscard]] std::string read_string(std::string_view field) {
    const auto n = read<std::uint64_t>(field);
    if (n > left()) {
      error(field, " has length ", n, " at offset ", pos_ - 8, ", past the end of the file (",
            left(), " bytes left)");
    }
    std::string s(reinterpret_cast<const char*>(bytes_.data() + pos_), static_cast<std::size_t>(n));
    pos_ += n;
    return s;
  }

  [[nodiscard]] ValueType read_value_type(std::string_view field) {
    const auto t = read<std::uint32_t>(field);
    if (t >= kValueTypeCount) {
      error(field, " is ", t, ", not a GGUF value type (0..", kValueTypeCount - 1, ")");
    }
    return static_cast<ValueType>(t);
  }

  [[nodiscard]] Value read_value(ValueType t, int depth) {
    switch (t) {
      case ValueType::U8: return read<std::uint8_t>("the uint8 value");
      case ValueType::I8: return read<std::int8_t>("the int8 value");
      case ValueType::U16: return read<std::uint16_t>("the uint16 value");
      case ValueType::I16: return read<std::int16_t>("the int16 value");
      case ValueType::U32: return read<std::uint32_t>("the uint32 value");
      case ValueType::I32: return read<std::int32_t>("the int32 value");
      case ValueType::F32: return read<float>("the float32 value");
      case ValueType::U64: return read<std::uint64_t>("the uint64 value");
      case ValueType::I64: return read<std::int64_t>("the int64 value");
      case ValueType::F64: return read<double>("the float64 value");
      case ValueType::Bool: {
        const auto b = read<std::uint8_t>("the bool value");
        if (b > 1) error("bool value at offset ", pos_ - 1, " is ", int{b}, ", not 0 or 1");
        return b == 1;
      }
      case ValueType::String: return read_string("the string value");
      case ValueType::Array: {
        if (depth >= kMaxArrayDepth) {
          error("arrays nested deeper than ", kMaxArrayDepth, " levels at offset ", pos_);
        }
        Array a;
        a.type = read_value_type("the array element type");
        const auto n = read<std::uint64_t>("the array count");
        const std::uint64_t min_bytes = min_value_bytes(a.type);
        if (n > left() / min_bytes) {
          error("array count ", n, " of ", value_type_name(a.type), " at offset ", pos_ - 8,
                " needs at least ", min_bytes, " bytes per element, but only ", left(),
                " bytes are left");
        }
        a.items.reserve(static_cast<std::size_t>(n));
        for (std::uint64_t i = 0; i < n; ++i) a.items.push_back(read_value(a.type, depth + 1));
        return a;
      }
    }
    error("value type ", static_cast<std::uint32_t>(t), " is unknown");
  }

  [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return bytes_; }

 private:
  std::span<const std::byte> bytes_;
  std::uint64_t pos_ = 0;
  std::string where_;
  std::string context_;
};

/// A read-only private mapping of a whole file; unmapped on destruction.
class Mapping {
 public:
  Mapping() = default;
  explicit Mapping(const std::filesystem::path& path) {
    const std::string file = path.string();
    const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail("gguf: cannot open '", file, "': ", std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const int e = errno;
      ::close(fd);
      fail("gguf: cannot stat '", file, "': ", std::strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      fail("gguf: '", file, "' is not a regular file");
    }
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        const int e = errno;
        ::close(fd);
        fail("gguf: cannot map '", file, "' (", size_, " bytes): ", std::strerror(e));
      }
      addr_ = p;
    }
    ::close(fd);  // the mapping keeps the file's pages
  }
  ~Mapping() {
    if (addr_ != nullptr) ::munmap(addr_, size_);
  }
  Mapping(Mapping&& o) noexcept
      : addr_(std::exchange(o.addr_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  Mapping& operator=(Mapping&& o) noexcept {
    if (this != &o) {
      if (addr_ != nullptr) ::munmap(addr_, size_);
      addr_ = std::exchange(o.addr_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  [[nodiscard]] std::span<const std::byte> bytes() const noexcept {
    return {static_cast<const std::byte*>(addr_), size_};
  }

 private:
  void* addr_ = nullptr;
  std::size_t size_ = 0;
};

/// The value as integer type To when it holds an integer (not bool) that fits.
template <class To>
[[nodiscard]] std::optional<To> integer_value(const Value& v) {
  return std::visit(
      [](const auto& x) -> std::optional<To> {
        using T = std::remove_cvref_t<decltype(x)>;
        if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
          if (std::in_range<To>(x)) return static_cast<To>(x);
        }
        return std::nullopt;
      },
      v.v);
}

}  // namespace detail

/// A GGUF file's metadata and tensor infos, parsed and validated once; tensor bytes are views
/// into the memory-mapped file. Movable, not copyable; views die with the File.
/// The mapping is of the file as it was opened: truncating the file meanwhile is undefined.
class File {
 public:
  /// Maps `path` read-only and parses it. Throws qtl::Error when the file cannot be opened or is
  /// not a valid GGUF file of version 2 or 3.
  [[nodiscard]] static File open(const std::filesystem::path& path) {
    detail::Mapping m(path);
    const auto bytes = m.bytes();
    File f = parse(bytes, path.string());
    f.mapping_ = std::move(m);
    return f;
  }

  /// Parses caller-owned bytes; they must outlive the File and its views. `name` is the file
  /// name that messages show.
  [[nodiscard]] static File from_memory(std::span<const std::byte> bytes,
                                        std::string name = "<memory>") {
    return parse(bytes, std::move(name));
  }

  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] std::uint32_t version() const noexcept { return version_; }
  [[nodiscard]] std::uint32_t alignment() const noexcept { return alignment_; }
  /// Start of the data section in the file: the end of the tensor infos, rounded up to the
  /// alignment when there are tensors (as llama.cpp's gguf_get_data_offset).
  [[nodiscard]] std::uint64_t data_offset() const noexcept { return data_offset_; }
  [[nodiscard]] std::size_t size() const noexcept { return bytes_.size(); }

  /// Every key/value, in file order.
  [[nodiscard]] const std::vector<KeyValue>& metadata() const noexcept { return metadata_; }

  /// The value of `key`, or nullptr.
  [[nodiscard]] const Value* find(std::string_view key) const {
    const auto it = key_index_.find(key);
    return it == key_index_.end() ? nullptr : &metadata_[it->second].value;
  }

  /// The value of `key`; throws naming the key when absent.
  [[nodiscard]] const Value& get(std::string_view key) const {
    const Value* v = find(key);
    if (v == nullptr) fail("gguf: '", name_, "': no metadata key '", key, "'");
    return *v;
  }

  [[nodiscard]] const std::string& get_string(std::string_view key) const {
    return get_exact<std::string>(key);
  }
  [[nodiscard]] bool get_bool(std::string_view key) const { return get_exact<bool>(key); }
  [[nodiscard]] float get_f32(std::string_view key) const { return get_exact<float>(key); }
  /// float64, or a float32 (widened exactly).
  [[nodiscard]] double get_f64(std::string_view key) const {
    const Value& v = get(key);
    if (const auto* f = std::get_if<float>(&v.v)) return *f;
    if (const auto* d = std::get_if<double>(&v.v)) return *d;
    type_error(key, detail::type_description(v), "float64 or float32");
  }
  /// Integer getters accept any integer type whose value fits; otherwise they throw.
  [[nodiscard]] std::uint32_t get_u32(std::string_view key) const { return get_int<std::uint32_t>(key); }
  [[nodiscard]] std::int32_t get_i32(std::string_view key) const { return get_int<std::int32_t>(key); }
  [[nodiscard]] std::uint64_t get_u64(std::string_view key) const { return get_int<std::uint64_t>(key); }
  [[nodiscard]] std::int64_t get_i64(std::string_view key) const { return get_int<std::int64_t>(key); }

  template <class To>
    requires std::is_integral_v<To> && (!std::is_same_v<To, bool>)
  [[nodiscard]] To get_int(std::string_view key) const {
    const Value& v = get(key);
    if (!detail::is_integer_type(v.type())) {
      type_error(key, detail::type_description(v), "an integer");
    }
    if (auto x = detail::integer_value<To>(v)) return *x;
    fail("gguf: '", name_, "': key '", key, "' = ", value_text(v), " (",
         value_type_name(v.type()), ") does not fit the integer type requested");
  }

  /// The array stored at `key`.
  [[nodiscard]] const Array& get_array(std::string_view key) const { return get_exact<Array>(key); }

  /// The array at `key` as a vector of T. Integer T accepts any integer element type whose
  /// values all fit; double accepts float32 elements; other T need their exact element type.
  template <class T>
  [[nodiscard]] std::vector<T> get_array(std::string_view key) const {
    const Array& a = get_array(key);
    constexpr bool kInteger = std::is_integral_v<T> && !std::is_same_v<T, bool>;
    if constexpr (kInteger) {
      if (!detail::is_integer_type(a.type)) {
        type_error(key, detail::array_description(a), "an array of integers");
      }
    } else if constexpr (std::is_same_v<T, double>) {
      if (a.type != ValueType::F32 && a.type != ValueType::F64) {
        type_error(key, detail::array_description(a), "an array of float64 or float32");
      }
    } else if (a.type != value_type_of<T>()) {
      type_error(key, detail::array_description(a),
                 str_cat("an array of ", value_type_name(value_type_of<T>())));
    }
    std::vector<T> out;
    out.reserve(a.items.size());
    for (std::size_t i = 0; i < a.items.size(); ++i) {
      const Value& item = a.items[i];
      if constexpr (kInteger) {
        const auto x = detail::integer_value<T>(item);
        if (!x) {
          fail("gguf: '", name_, "': key '", key, "': element ", i, " = ", value_text(item), " (",
               value_type_name(a.type), ") does not fit the integer type requested");
        }
        out.push_back(*x);
      } else if constexpr (std::is_same_v<T, double>) {
        const auto* f = std::get_if<float>(&item.v);
        out.push_back(f != nullptr ? double{*f} : std::get<double>(item.v));
      } else {
        out.push_back(std::get<T>(item.v));
      }
    }
    return out;
  }

  /// Tensor infos in file order.
  [[nodiscard]] const std::vector<TensorInfo>& tensors() const noexcept { return tensors_; }

  [[nodiscard]] TensorView view(const TensorInfo& t) const {
    return {t.name, t.type, t.shape, t.n_elements,
            bytes_.subspan(static_cast<std::size_t>(data_offset_ + t.offset),
                           static_cast<std::size_t>(t.n_bytes))};
  }

  [[nodiscard]] std::optional<TensorView> find_tensor(std::string_view name) const {
    const auto it = tensor_index_.find(name);
    if (it == tensor_index_.end()) return std::nullopt;
    return view(tensors_[it->second]);
  }

  /// The tensor `name`; throws naming it when the file has no such tensor.
  [[nodiscard]] TensorView tensor(std::string_view name) const {
    auto t = find_tensor(name);
    if (!t) fail("gguf: '", name_, "': no tensor named '", name, "' (", tensors_.size(), " tensors)");
    return *t;
  }

 private:
  File() = default;

  [[nodiscard]] static File parse(std::span<const std::byte> bytes, std::string name);

  template <class T>
  [[nodiscard]] const T& get_exact(std::string_view key) const {
    const Value& v = get(key);
    if (const T* x = std::get_if<T>(&v.v)) return *x;
    type_error(key, detail::type_description(v), value_type_name(value_type_of<T>()));
  }

  [[noreturn]] void type_error(std::string_view key, const std::string& actual,
                               std::string_view wanted) const {
    fail("gguf: '", name_, "': key '", key, "' has type ", actual, ", not ", wanted);
  }

  [[nodiscard]] static std::string value_text(const Value& v) {
    return std::visit(
        [](const auto& x) -> std::string {
          using T = std::remove_cvref_t<decltype(x)>;
          if constexpr (std::is_same_v<T, std::uint8_t> || std::is_same_v<T, std::int8_t>) {
            return str_cat(int{x});
          } else if constexpr (std::is_arithmetic_v<T>) {
            return str_cat(x);
          } else {
            return "?";
          }
        },
        v.v);
  }

  std::string name_;
  detail::Mapping mapping_;
  std::span<const std::byte> bytes_;
  std::uint32_t version_ = 0;
  std::uint32_t alignment_ = kDefaultAlignment;
  std::uint64_t data_offset_ = 0;
  std::vector<KeyValue> metadata_;
  detail::NameIndex key_index_;
  std::vector<TensorInfo> tensors_;
  detail::NameIndex tensor_index_;
};

inline File File::parse(std::span<const std::byte> bytes, std::string name) {
  File f;
  f.name_ = std::move(name);
  f.bytes_ = bytes;
  detail::GgufParser p(bytes, str_cat("gguf: '", f.name_, "': "));

  // Header.
  p.set_context("header");
  p.need(4, "the magic");
  if (std::memcmp(bytes.data(), "GGUF", 4) != 0) {
    std::string shown;
    for (std::size_t i = 0; i < 4; ++i) {
      const auto c = static_cast<unsigned char>(bytes[i]);
      shown += (c >= 0x20 && c < 0x7F) ? str_cat(static_cast<char>(c)) : str_cat("\\x", std::hex, int{c});
    }
    p.error("magic is '", shown, "', not 'GGUF': not a GGUF file");
  }
  (void)p.read<std::uint32_t>("the magic");
  f.version_ = p.read<std::uint32_t>("the version");
  if (f.version_ == 1) {
    p.error("version 1 is not supported (GGUF v1 stored 32-bit counts; convert the file anew)");
  }
  if (f.version_ != 2 && f.version_ != 3) {
    p.error("version ", f.version_, " is not supported (versions 2 and 3 are)");
  }
  const auto n_tensors = p.read<std::uint64_t>("the tensor count");
  const auto n_kv = p.read<std::uint64_t>("the metadata kv count");
  // Each kv holds at least a key length, a value type and a one-byte value; each tensor info at
  // least a name length, n_dims, a type and an offset: counts beyond that are absurd.
  constexpr std::uint64_t kMinKv = 8 + 4 + 1;
  constexpr std::uint64_t kMinTensorInfo = 8 + 4 + 4 + 8;
  if (n_kv > p.left() / kMinKv) {
    p.error("metadata kv count ", n_kv, " is absurd: the ", p.left(),
            " bytes left hold at most ", p.left() / kMinKv, " entries");
  }
  if (n_tensors > p.left() / kMinTensorInfo) {
    p.error("tensor count ", n_tensors, " is absurd: the ", p.left(),
            " bytes left hold at most ", p.left() / kMinTensorInfo, " tensor infos");
  }

  // Metadata.
  f.metadata_.reserve(static_cast<std::size_t>(n_kv));
  for (std::uint64_t i = 0; i < n_kv; ++i) {
    p.set_context(str_cat("metadata kv ", i));
    std::string key = p.read_string("the key");
    if (key.empty()) p.error("the key is empty");
    p.set_context(str_cat("metadata kv ", i, " '", key, "'"));
    if (f.key_index_.contains(key)) {
      p.error("duplicate key (also kv ", f.key_index_.at(key), ")");
    }
    const ValueType t = p.read_value_type("the value type");
    Value v = p.read_value(t, 0);
    f.key_index_.emplace(key, f.metadata_.size());
    f.metadata_.push_back({std::move(key), std::move(v)});
  }

  if (const Value* a = f.find(kAlignmentKey)) {
    p.set_context(str_cat("metadata '", kAlignmentKey, "'"));
    const auto* u = std::get_if<std::uint32_t>(&a->v);
    if (u == nullptr) p.error("has type ", detail::type_description(*a), ", must be uint32");
    if (*u == 0 || !std::has_single_bit(*u)) {
      p.error("alignment ", *u, " is not a nonzero power of two");
    }
    f.alignment_ = *u;
  }

  // Tensor infos.
  f.tensors_.reserve(static_cast<std::size_t>(n_tensors));
  for (std::uint64_t i = 0; i < n_tensors; ++i) {
    p.set_context(str_cat("tensor info ", i));
    TensorInfo t;
    t.name = p.read_string("the tensor name");
    if (t.name.empty()) p.error("the tensor name is empty");
    p.set_context(str_cat("tensor ", i, " '", t.name, "'"));
    if (f.tensor_index_.contains(t.name)) {
      p.error("duplicate tensor name (also tensor ", f.tensor_index_.at(t.name), ")");
    }
    const auto n_dims = p.read<std::uint32_t>("n_dims");
    if (n_dims > static_cast<std::uint32_t>(kMaxDims)) {
      p.error("n_dims ", n_dims, " is more than ", kMaxDims);
    }
    for (std::uint32_t d = 0; d < n_dims; ++d) {
      const auto ne = p.read<std::uint64_t>("a dimension");
      if (ne > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        p.error("dimension ", d, " is ", ne, ", more than int64 holds");
      }
      t.shape.push_back(static_cast<std::int64_t>(ne));
    }
    const auto type = p.read<std::uint32_t>("the tensor type");
    const auto info = ggml::type_info(type);
    if (!info) p.error("ggml type ", type, " is unknown (qtl knows ", ggml::kGgmlTypes.size(), " types)");
    t.type = info->type;
    t.offset = p.read<std::uint64_t>("the tensor offset");
    const auto size = detail::tensor_size(p.where(), t.name, t.type, t.shape);
    t.n_elements = size.n_elements;
    t.n_bytes = size.n_bytes;
    if (t.offset % f.alignment_ != 0) {
      p.error("offset ", t.offset, " is not a multiple of the alignment ", f.alignment_);
    }
    f.tensor_index_.emplace(t.name, f.tensors_.size());
    f.tensors_.push_back(std::move(t));
  }

  // Data section: at the aligned position after the infos; every tensor inside the file.
  // Without tensors, llama.cpp's reader reports the unpadded end of the infos: so does this.
  f.data_offset_ = p.pos();
  if (!f.tensors_.empty()) {
    p.set_context("data section");
    f.data_offset_ = detail::align_up(p.pos(), f.alignment_);  // pos <= size: no overflow
    if (f.data_offset_ > bytes.size()) {
      p.error("starts at ", f.data_offset_, ", past the end of the file (", bytes.size(), " bytes)");
    }
  }
  const std::uint64_t data_size = bytes.size() - f.data_offset_;
  for (const TensorInfo& t : f.tensors_) {
    if (t.offset > data_size || t.n_bytes > data_size - t.offset) {
      fail(p.where(), "tensor '", t.name, "': bytes [", t.offset, ", ", t.offset, " + ", t.n_bytes,
           ") of the data section lie outside the file (the data section holds ", data_size,
           " bytes from offset ", f.data_offset_, ")");
    }
  }
  std::vector<const TensorInfo*> by_offset;
  by_offset.reserve(f.tensors_.size());
  for (const TensorInfo& t : f.tensors_) {
    if (t.n_bytes > 0) by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
  for (std::size_t i = 1; i < by_offset.size(); ++i) {
    const TensorInfo& a = *by_offset[i - 1];
    const TensorInfo& b = *by_offset[i];
    if (b.offset < a.offset + a.n_bytes) {
      fail(p.where(), "tensors '", a.name, "' (bytes [", a.offset, ", ", a.offset + a.n_bytes,
           ")) and '", b.name, "' (bytes [", b.offset, ", ", b.offset + b.n_bytes,
           ")) overlap");
    }
  }
  return f;
}

/// Writes a GGUF version 3 file: metadata and tensor declarations first, then each tensor's
/// bytes in declaration order, one at a time, so that a caller never holds two copies of a
/// model. The file is written to a temporary name in the target's folder and renamed over the
/// target by finish(); a Writer destroyed before finish() removes the temporary file and leaves
/// an existing target untouched.
///
///   qtl::gguf::Writer w("model.gguf");
///   w.set("general.architecture", std::string("llama"));
///   w.add_tensor("tok_embd.weight", qtl::ggml::Type::Q8_0, {4096, 32000});
///   w.write_tensor("tok_embd.weight", std::as_bytes(std::span(blocks)));
///   w.finish();
class Writer {
 public:
  explicit Writer(std::filesystem::path path) : path_(std::move(path)) {
    static std::atomic<unsigned> counter{0};
    const std::string base = path_.filename().string();
    if (base.empty()) fail("gguf writer: '", path_.string(), "' names no file");
    for (int attempt = 0; attempt < 100; ++attempt) {
      tmp_path_ = path_.parent_path() /
                  str_cat(".", base, ".tmp.", ::getpid(), ".", counter.fetch_add(1), ".",
                          std::random_device{}() % 100000);
      fd_ = ::open(tmp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
      if (fd_ >= 0 || errno != EEXIST) break;
    }
    if (fd_ < 0) {
      const int e = errno;
      fail("gguf writer: cannot create a temporary file next to '", path_.string(), "' ('",
           tmp_path_.string(), "'): ", std::strerror(e));
    }
  }

  ~Writer() {
    if (fd_ >= 0) {
      ::close(fd_);
      ::unlink(tmp_path_.c_str());
    }
  }
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;
  Writer(Writer&&) = delete;
  Writer& operator=(Writer&&) = delete;

  /// Sets `key` (replacing an earlier value of the same key, in its place). Arrays must hold
  /// items of their element type. "general.alignment" must be a uint32 power of two and sets the
  /// alignment of the data. Only before the first write_tensor().
  void set(std::string key, Value value) {
    require_declaring("set");
    if (key.empty()) fail("gguf writer: '", path_.string(), "': empty metadata key");
    check_value(key, value, 0);
    if (key == kAlignmentKey) {
      const auto* u = std::get_if<std::uint32_t>(&value.v);
      if (u == nullptr) {
        fail("gguf writer: '", path_.string(), "': ", kAlignmentKey, " must be uint32, got ",
             detail::type_description(value));
      }
      if (*u == 0 || !std::has_single_bit(*u)) {
        fail("gguf writer: '", path_.string(), "': ", kAlignmentKey, " ", *u,
             " is not a nonzero power of two");
      }
      alignment_ = *u;
    }
    if (const auto it = key_index_.find(key); it != key_index_.end()) {
      metadata_[it->second].value = std::move(value);
      return;
    }
    key_index_.emplace(key, metadata_.size());
    metadata_.push_back({std::move(key), std::move(value)});
  }

  /// Declares a tensor; `shape` is ggml's ne (row length first), 1 to 4 dimensions.
  void add_tensor(std::string name, ggml::Type type, std::vector<std::int64_t> shape) {
    require_declaring("add_tensor");
    const std::string where = str_cat("gguf writer: '", path_.string(), "': ");
    if (name.empty()) fail(where, "empty tensor name");
    if (name.size() > kMaxTensorName) {
      fail(where, "tensor name '", name, "' has ", name.size(), " bytes, more than llama.cpp's ",
           kMaxTensorName);
    }
    if (tensor_index_.contains(name)) fail(where, "tensor '", name, "' is declared twice");
    if (shape.empty() || shape.size() > static_cast<std::size_t>(kMaxDims)) {
      fail(where, "tensor '", name, "' has ", shape.size(), " dimensions, must have 1 to ", kMaxDims);
    }
    const auto size = detail::tensor_size(where, name, type, shape);
    TensorInfo t{std::move(name), type, std::move(shape), size.n_elements, 0, size.n_bytes};
    tensor_index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
  }

  /// Writes the next declared tensor's bytes; `name` must be that tensor and `bytes` exactly
  /// its size.
  void write_tensor(std::string_view name, std::span<const std::byte> bytes) {
    if (finished_) fail("gguf writer: '", path_.string(), "': write_tensor after finish");
    if (!header_written_) write_header();
    if (next_tensor_ >= tensors_.size()) {
      fail("gguf writer: '", path_.string(), "': write_tensor('", name, "'): all ", tensors_.size(),
           " declared tensors are written already");
    }
    const TensorInfo& t = tensors_[next_tensor_];
    if (name != t.name) {
      fail("gguf writer: '", path_.string(), "': write_tensor('", name, "'): the next tensor in "
           "declaration order is '", t.name, "'");
    }
    if (bytes.size() != t.n_bytes) {
      fail("gguf writer: '", path_.string(), "': tensor '", name, "' (", ggml::type_name(t.type),
           ", ", t.n_elements, " elements) takes ", t.n_bytes, " bytes, got ", bytes.size());
    }
    put(bytes.data(), bytes.size());
    pad();
    ++next_tensor_;
  }

  /// Completes the file and renames it over the target. Every declared tensor must be written.
  void finish() {
    if (finished_) fail("gguf writer: '", path_.string(), "': finish called twice");
    if (!header_written_) write_header();
    if (next_tensor_ < tensors_.size()) {
      fail("gguf writer: '", path_.string(), "': finish with ", tensors_.size() - next_tensor_,
           " of ", tensors_.size(), " tensors unwritten (next: '", tensors_[next_tensor_].name, "')");
    }
    flush();
    if (::fsync(fd_) != 0) fail_errno("fsync");
    const int fd = std::exchange(fd_, -1);
    if (::close(fd) != 0) {
      ::unlink(tmp_path_.c_str());
      fail_errno("close");
    }
    if (::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
      const int e = errno;
      ::unlink(tmp_path_.c_str());
      fail("gguf writer: cannot rename '", tmp_path_.string(), "' to '", path_.string(), "': ",
           std::strerror(e));
    }
    finished_ = true;
  }

  [[nodiscard]] std::uint32_t alignment() const noexcept { return alignment_; }
  [[nodiscard]] const std::vector<TensorInfo>& tensors() const noexcept { return tensors_; }

 private:
  void require_declaring(std::string_view what) const {
    if (header_written_ || finished_) {
      fail("gguf writer: '", path_.string(), "': ", what,
           " after the first write_tensor or finish; declare everything first");
    }
  }

  void check_value(const std::string& key, const Value& v, int depth) const {
    const auto* a = std::get_if<Array>(&v.v);
    if (a == nullptr) return;
    if (depth >= kMaxArrayDepth) {
      fail("gguf writer: '", path_.string(), "': key '", key, "': arrays nested deeper than ",
           kMaxArrayDepth, " levels");
    }
    if (static_cast<std::uint32_t>(a->type) >= kValueTypeCount) {
      fail("gguf writer: '", path_.string(), "': key '", key, "': array element type ",
           static_cast<std::uint32_t>(a->type), " is unknown");
    }
    for (std::size_t i = 0; i < a->items.size(); ++i) {
      if (a->items[i].type() != a->type) {
        fail("gguf writer: '", path_.string(), "': key '", key, "': element ", i, " has type ",
             detail::type_description(a->items[i]), ", the array's element type is ",
             value_type_name(a->type));
      }
      check_value(key, a->items[i], depth + 1);
    }
  }

  [[noreturn]] void fail_errno(std::string_view what) const {
    const int e = errno;
    fail("gguf writer: ", what, " of '", tmp_path_.string(), "' failed: ", std::strerror(e));
  }

  void write_all(const char* p, std::size_t size) {
    std::size_t done = 0;
    while (done < size) {
      const ssize_t n = ::write(fd_, p + done, size - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        fail_errno("write");
      }
      done += static_cast<std::size_t>(n);
    }
  }

  void flush() {
    write_all(buffer_.data(), buffer_.size());
    buffer_.clear();
  }

  void put(const void* data, std::size_t n) {
    constexpr std::size_t kBufferBytes = std::size_t{1} << 20;
    const auto* p = static_cast<const char*>(data);
    if (buffer_.size() + n > kBufferBytes) flush();
    if (n >= kBufferBytes) {
      write_all(p, n);  // large tensors go straight to the file, never copied
    } else {
      buffer_.insert(buffer_.end(), p, p + n);
    }
    written_ += n;
  }

  template <class T>
  void put_scalar(T x) {
    put(&x, sizeof(T));
  }

  void put_string(std::string_view s) {
    put_scalar<std::uint64_t>(s.size());
    put(s.data(), s.size());
  }

  void put_value(const Value& v) {
    std::visit(
        [&](const auto& x) {
          using T = std::remove_cvref_t<decltype(x)>;
          if constexpr (std::is_same_v<T, std::string>) {
            put_string(x);
          } else if constexpr (std::is_same_v<T, Array>) {
            put_scalar(static_cast<std::uint32_t>(x.type));
            put_scalar<std::uint64_t>(x.items.size());
            for (const Value& item : x.items) put_value(item);
          } else if constexpr (std::is_same_v<T, bool>) {
            put_scalar<std::uint8_t>(x ? 1 : 0);
          } else {
            put_scalar(x);
          }
        },
        v.v);
  }

  void pad() {
    static constexpr std::array<char, 64> kZeros{};
    std::uint64_t n = detail::align_up(written_, alignment_) - written_;
    while (n > 0) {
      const std::size_t k = std::min<std::uint64_t>(n, kZeros.size());
      put(kZeros.data(), k);
      n -= k;
    }
  }

  void write_header() {
    std::uint64_t offset = 0;
    for (TensorInfo& t : tensors_) {
      t.offset = offset;
      if (__builtin_add_overflow(offset, detail::align_up(t.n_bytes, alignment_), &offset)) {
        fail("gguf writer: '", path_.string(), "': the tensors' total size overflows 64 bits");
      }
    }
    put("GGUF", 4);
    put_scalar<std::uint32_t>(3);
    put_scalar<std::uint64_t>(tensors_.size());
    put_scalar<std::uint64_t>(metadata_.size());
    for (const KeyValue& kv : metadata_) {
      put_string(kv.key);
      put_scalar(static_cast<std::uint32_t>(kv.value.type()));
      put_value(kv.value);
    }
    for (const TensorInfo& t : tensors_) {
      put_string(t.name);
      put_scalar<std::uint32_t>(static_cast<std::uint32_t>(t.shape.size()));
      for (std::int64_t ne : t.shape) put_scalar<std::uint64_t>(static_cast<std::uint64_t>(ne));
      put_scalar(static_cast<std::uint32_t>(t.type));
      put_scalar<std::uint64_t>(t.offset);
    }
    pad();  // llama.cpp pads the data section's start even when there are no tensors
    header_written_ = true;
  }

  std::filesystem::path path_;
  std::filesystem::path tmp_path_;
  int fd_ = -1;
  std::vector<char> buffer_;
  std::uint64_t written_ = 0;
  std::uint32_t alignment_ = kDefaultAlignment;
  std::vector<KeyValue> metadata_;
  detail::NameIndex key_index_;
  std::vector<TensorInfo> tensors_;
  detail::NameIndex tensor_index_;
  std::size_t next_tensor_ = 0;
  bool header_written_ = false;
  bool finished_ = false;
};

}  // namespace qtl::gguf

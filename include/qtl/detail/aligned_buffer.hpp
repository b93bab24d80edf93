// qtl/detail/aligned_buffer.hpp — a zero-initialized byte buffer aligned to 64 bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>

namespace qtl::detail {

class AlignedBuffer {
 public:
  static constexpr std::size_t kAlignment = 64;

  AlignedBuffer() = default;
  explicit AlignedBuffer(std::size_t bytes) : size_(bytes) {
    if (bytes == 0) return;
    const std::size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
    data_.reset(static_cast<std::uint8_t*>(::operator new(rounded, std::align_val_t{kAlignment})));
    std::memset(data_.get(), 0, rounded);
  }
  AlignedBuffer(const AlignedBuffer& other) : AlignedBuffer(other.size_) {
    if (size_) std::memcpy(data_.get(), other.data_.get(), size_);
  }
  AlignedBuffer& operator=(const AlignedBuffer& other) {
    if (this != &other) {
      AlignedBuffer copy(other);
      *this = std::move(copy);
    }
    return *this;
  }
  AlignedBuffer(AlignedBuffer&&) noexcept = default;
  AlignedBuffer& operator=(AlignedBuffer&&) noexcept = default;

  [[nodiscard]] std::uint8_t* data() noexcept { return data_.get(); }
  [[nodiscard]] const std::uint8_t* data() const noexcept { return data_.get(); }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }

 private:
  struct Deleter {
    void operator()(std::uint8_t* p) const noexcept {
      ::operator delete(p, std::align_val_t{kAlignment});
    }
  };
  std::unique_ptr<std::uint8_t[], Deleter> data_;
  std::size_t size_ = 0;
};

}  // namespace qtl::detail

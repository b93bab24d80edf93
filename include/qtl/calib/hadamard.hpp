// qtl/calib/hadamard.hpp — randomized Hadamard rotations (QuIP#'s incoherence processing,
// QuaRot / SpinQuant's online Hadamard), for any size.
//
// A rotation R (orthogonal, n x n) leaves a linear layer unchanged when it is applied to both
// sides:  y = W x = (W R)(Rᵀ x).  Rotating spreads outlier channels of x and outlier weights of W
// over all coordinates, so both become easier to quantize (QuIP# §3, QuaRot §3).
//
// Here n = 2^k · m with m odd, and
//   Rᵀ x = K (D x),   K = (H_{2^k} / sqrt(2^k)) ⊗ Q_m,   D = diag(±1) random signs,
// where H is the Sylvester Hadamard matrix (symmetric, H H = 2^k I) and Q_m a random orthogonal
// m x m matrix (QR of a Gaussian matrix with the signs of R's diagonal fixed, which makes Q Haar
// distributed). For m = 1 this is the randomized Hadamard transform; for the model's FFN width
// 172 = 4 · 43 it is H_4 ⊗ Q_43 (QuaRot uses a stored Hadamard matrix of size 172 instead; any
// orthogonal factor keeps the layer exact). Index i = a·m + b addresses element (a, b) of x seen
// as a [2^k x m] row-major matrix X, and K x = vec(H X Qᵀ)/sqrt(2^k): Q on each row of X, then a
// fast Walsh–Hadamard butterfly across rows. Cost per vector: n (log2(2^k) + m) multiply-adds,
// i.e. O(n log n) for powers of two.
//
// The same map serves both sides: a row w of W becomes a row of W R iff w ← Rᵀ w, so
// `apply` rotates activations (x ← Rᵀ x) and weight rows alike; `apply_inverse` undoes it.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include <Eigen/QR>

#include "qtl/core/error.hpp"
#include "qtl/core/types.hpp"
#include "qtl/core/validate.hpp"

namespace qtl::calib {

/// In place, x [rows x width] row-major (rows a power of two): x ← (H_rows / sqrt(rows)) x, the
/// butterfly (u, v) ← (u + v, u − v) on whole rows. width = 1 is the plain normalized FWHT.
template <class T>
void fwht_rows(T* x, Index rows, Index width) noexcept {
  for (Index h = 1; h < rows; h *= 2) {
    for (Index i = 0; i < rows; i += 2 * h) {
      for (Index j = i; j < i + h; ++j) {
        T* a = x + j * width;
        T* b = x + (j + h) * width;
        for (Index c = 0; c < width; ++c) {
          const T u = a[c], v = b[c];
          a[c] = u + v;
          b[c] = u - v;
        }
      }
    }
  }
  const T scale = T(1) / std::sqrt(static_cast<T>(rows));
  for (Index i = 0; i < rows * width; ++i) x[i] *= scale;
}

class RandomizedHadamard {
 public:
  /// Largest odd factor handled (its dense m x m block costs m multiply-adds per element).
  static constexpr Index kMaxOddFactor = 1024;

  /// (A constructor template only to defer the QR's instantiation: qtl/core/types.hpp.)
  template <class Deferred = void>
  RandomizedHadamard(Index n, std::uint64_t seed) : n_(n) {
    if (n < 1) fail("RandomizedHadamard: size must be >= 1, got ", n);
    pow2_ = 1;
    while ((n / pow2_) % 2 == 0) pow2_ *= 2;
    odd_ = n / pow2_;
    if (odd_ > kMaxOddFactor) {
      fail("RandomizedHadamard: size ", n, " = ", pow2_, " x ", odd_, " has an odd factor above ",
           kMaxOddFactor);
    }
    std::mt19937_64 rng(seed);
    signs_.resize(n);
    for (Index i = 0; i < n; ++i) signs_[i] = (rng() & 1u) ? -1.0f : 1.0f;
    if (odd_ > 1) {
      std::normal_distribution<double> normal(0.0, 1.0);
      Eigen::MatrixXd g(odd_, odd_);
      for (Index c = 0; c < odd_; ++c)
        for (Index r = 0; r < odd_; ++r) g(r, c) = normal(rng);
      Eigen::HouseholderQR<Eigen::MatrixXd> qr(g);
      Eigen::MatrixXd q = qr.householderQ();
      const Eigen::MatrixXd rr = qr.matrixQR().triangularView<Eigen::Upper>();
      for (Index c = 0; c < odd_; ++c) {
        if (rr(c, c) < 0) q.col(c) *= -1.0;
      }
      q_ = q.cast<float>();
      qd_ = q;
    }
  }

  [[nodiscard]] Index size() const noexcept { return n_; }
  [[nodiscard]] Index power_of_two_factor() const noexcept { return pow2_; }
  [[nodiscard]] Index odd_factor() const noexcept { return odd_; }

  /// x ← Rᵀ x for one vector of size() values (float or double).
  template <class T>
  void apply(T* x) const noexcept {
    for (Index i = 0; i < n_; ++i) x[i] *= static_cast<T>(signs_[i]);
    if (odd_ > 1) {
      std::array<T, kMaxOddFactor> tmp;
      for (Index a = 0; a < pow2_; ++a) {
        T* row = x + a * odd_;
        for (Index r = 0; r < odd_; ++r) {
          T s = 0;
          for (Index c = 0; c < odd_; ++c) s += factor<T>(r, c) * row[c];
          tmp[static_cast<std::size_t>(r)] = s;
        }
        for (Index r = 0; r < odd_; ++r) row[r] = tmp[static_cast<std::size_t>(r)];
      }
    }
    fwht_rows(x, pow2_, odd_);
  }

  /// x ← R x (undoes apply).
  template <class T>
  void apply_inverse(T* x) const noexcept {
    fwht_rows(x, pow2_, odd_);
    if (odd_ > 1) {
      std::array<T, kMaxOddFactor> tmp;
      for (Index a = 0; a < pow2_; ++a) {
        T* row = x + a * odd_;
        for (Index r = 0; r < odd_; ++r) {
          T s = 0;
          for (Index c = 0; c < odd_; ++c) s += factor<T>(c, r) * row[c];
          tmp[static_cast<std::size_t>(r)] = s;
        }
        for (Index r = 0; r < odd_; ++r) row[r] = tmp[static_cast<std::size_t>(r)];
      }
    }
    for (Index i = 0; i < n_; ++i) x[i] *= static_cast<T>(signs_[i]);
  }

  /// Every row t of X [tokens x n] becomes Rᵀ x_t: activations X Rᵀᵀ = X R, or weights W R.
  [[nodiscard]] RowMatrixXf rotate_rows(MatrixRef x) const {
    require_width("RandomizedHadamard::rotate_rows", x.cols());
    RowMatrixXf out = x;
    for (Index t = 0; t < out.rows(); ++t) apply(out.row(t).data());
    return out;
  }
  /// Undoes rotate_rows.
  [[nodiscard]] RowMatrixXf unrotate_rows(MatrixRef x) const {
    require_width("RandomizedHadamard::unrotate_rows", x.cols());
    RowMatrixXf out = x;
    for (Index t = 0; t < out.rows(); ++t) apply_inverse(out.row(t).data());
    return out;
  }
  /// The second moment of rotated inputs: Rᵀ H R (H symmetric n x n).
  [[nodiscard]] Eigen::MatrixXd rotate_hessian(const Eigen::MatrixXd& h) const {
    require_width("RandomizedHadamard::rotate_hessian", h.cols());
    RowMatrixXd m = h;  // rows of H become rows of H R
    for (Index r = 0; r < n_; ++r) apply(m.row(r).data());
    RowMatrixXd t = m.transpose();  // Rᵀ H, then its rows: Rᵀ H R
    for (Index r = 0; r < n_; ++r) apply(t.row(r).data());
    return t;
  }
  /// R as a dense matrix (tests, small sizes).
  [[nodiscard]] RowMatrixXf matrix() const {
    // Column j of Rᵀ is Rᵀ e_j, so rotating the identity's rows gives (Rᵀ)ᵀ = R... row j of
    // the result is Rᵀ e_j, i.e. column j of Rᵀ = row j of R.
    return rotate_rows(RowMatrixXf::Identity(n_, n_));
  }

 private:
  template <class T>
  [[nodiscard]] T factor(Index r, Index c) const noexcept {
    if constexpr (std::is_same_v<T, double>) {
      return qd_(r, c);
    } else {
      return static_cast<T>(q_(r, c));
    }
  }
  void require_width(std::string_view where, Index cols) const {
    if (cols != n_) fail(where, ": rows have ", cols, " values, the rotation has size ", n_);
  }

  Index n_;
  Index pow2_ = 1;
  Index odd_ = 1;
  VectorXf signs_;
  RowMatrixXf q_;
  RowMatrixXd qd_;
};

}  // namespace qtl::calib

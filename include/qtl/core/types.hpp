// qtl/core/types.hpp — the matrix aliases every layer shares.
//
// Weights are row-major [out_features x in_features] (PyTorch's layout), so a group of inputs
// along a row is contiguous. Activations are [tokens x in_features], also row-major, so one
// token is one contiguous row. Take inputs as Eigen::Ref<const RowMatrixXf>: a Ref of a
// different storage order would silently copy.
//
// Deferred instantiation: a non-template inline function that calls an Eigen decomposition
// (BDCSVD, QR, LLT, triangular solves, large products) makes GCC instantiate those templates in
// every translation unit that includes its header, called or not: BDCSVD<MatrixXd> alone costs
// 17 s there. Such functions (and classes) are written `template <class Deferred = void>`, the
// argument never given, so that only translation units that use them pay for them.
#pragma once

#include <Eigen/Core>
#include <cstddef>
#include <cstdint>

namespace qtl {

using Index = Eigen::Index;
using RowMatrixXf = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using RowMatrixXd = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using VectorXf = Eigen::VectorXf;
using VectorXd = Eigen::VectorXd;
using MatrixRef = Eigen::Ref<const RowMatrixXf>;
using MatrixMap = Eigen::Map<const RowMatrixXf>;
using VectorRef = Eigen::Ref<const VectorXf>;

}  // namespace qtl

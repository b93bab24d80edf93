// qtl/core/types.hpp — the matrix aliases every layer shares.
//
// Weights are row-major [out_features x in_features] (PyTorch's layout), so a group of inputs
// along a row is contiguous. Activations are [tokens x in_features], also row-major, so one
// token is one contiguous row. Take inputs as Eigen::Ref<const RowMatrixXf>: a Ref of a
// different storage order would silently copy.
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

// qtl/core/overloaded.hpp — one callable from several lambdas, for std::visit over a variant:
//   std::visit(Overloaded{[](const A& a) { ... }, [](const B& b) { ... }}, v);
// Every alternative must be handled: a variant that gains a type no lambda takes fails to
// compile at each visit, instead of falling into an `else` branch meant for another type.
#pragma once

namespace qtl {

template <class... F>
struct Overloaded : F... {
  using F::operator()...;
};
template <class... F>
Overloaded(F...) -> Overloaded<F...>;

}  // namespace qtl

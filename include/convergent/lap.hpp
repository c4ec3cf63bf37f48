// Exact linear assignment (the paper's one-to-one matching) for dense rectangular matrices. The result
// carries its dual variables, which prove optimality and are checked by the tests.
#pragma once

#include <cstdint>
#include <vector>

#include "convergent/matrix.hpp"

namespace convergent {

enum class Objective { minimize, maximize };

struct AssignmentOptions {
  Objective objective = Objective::maximize;
  int threads = 1;  // worker threads for large matrices; the result does not depend on it
};

// For an R x C matrix, min(R, C) pairs are assigned. Duals are those of the minimisation form, with cost
// c = weights (minimize) or c = -weights (maximize), and certify optimality:
//   row_dual[i] + col_dual[j] <= c[i][j] for every allowed pair, with equality on assigned pairs;
//   when R < C every col_dual <= 0 and unassigned columns have col_dual == 0 (mirrored when R > C).
// The forbidden entry is the infinity that is worst for the objective (+inf when minimising, -inf when
// maximising); NaN and the other infinity are rejected with Error, and so is a matrix for which no
// complete assignment avoids forbidden pairs. Ties break toward lower indices, so results reproduce.
struct Assignment {
  std::vector<std::int64_t> row_to_col;  // -1 for a row left unassigned (R > C)
  std::vector<std::int64_t> col_to_row;  // -1 for a column left unassigned (R < C)
  std::vector<double> row_dual;
  std::vector<double> col_dual;
  double total = 0.0;  // sum of weights over assigned pairs, in the caller's units
};

Assignment solve_assignment(MatrixView<const double> weights, const AssignmentOptions& options = {});

}  // namespace convergent

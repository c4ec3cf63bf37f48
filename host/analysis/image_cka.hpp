// The image-level CKA's share of the pass (StudyOptions::samples == images): every input one sample of its
// flattened features, fed the same batches as the positions' accumulator. Exact (Moments over the
// flattened features, through the backend's accumulator) or Nguyen et al.'s (2021) minibatch estimator.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "convergent/backend.hpp"
#include "convergent/study.hpp"

namespace convergent::detail {

class ImageCkaAccumulator {
 public:
  // units: C per net; rows_per_input: sample rows every input adds (Study::rows_per_input). The estimator
  // follows options.image_exact_features; Error when image_minibatch < 4.
  ImageCkaAccumulator(Backend& backend, const std::vector<std::int64_t>& units, std::int64_t rows_per_input,
                      const StudyOptions& options);
  ~ImageCkaAccumulator();
  // Inputs per batch the minibatch estimator needs (a multiple of the minibatch), or 1 (exact).
  std::int64_t batch_inputs_multiple() const;
  // One batch of whole inputs, the blocks handed to the positions' accumulator.
  void add(const std::vector<ActivationBlock>& batch);
  // The estimate, once, at the end of the pass: the exact estimator's Moments are handed over (no copy of
  // the F x F comoment) and its accumulator and staging are freed; no add() or result() after it.
  ImageCka result();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace convergent::detail

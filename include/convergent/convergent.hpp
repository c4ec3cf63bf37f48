// Everything public in one include.
#pragma once

#include "convergent/activation.hpp"
#include "convergent/backend.hpp"
#include "convergent/error.hpp"
#include "convergent/lap.hpp"
#include "convergent/matrix.hpp"
#include "convergent/mean_distributions.hpp"
#include "convergent/memory_plan.hpp"
#include "convergent/moments.hpp"
#include "convergent/mutual_information.hpp"
#include "convergent/reliability.hpp"
#include "convergent/similarity_indices.hpp"
#include "convergent/sparse_prediction.hpp"
#include "convergent/spectral.hpp"
#include "convergent/stats_file.hpp"
#include "convergent/study.hpp"

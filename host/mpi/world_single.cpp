// Without MPI: one process. A launcher's several processes would be K independent full runs writing the
// same outputs, so they are refused rather than ignored.
#include "convergent/error.hpp"
#include "mpi/world.hpp"

namespace convergent::mpi {

std::string description() { return "not compiled (configure with -DCONVERGENT_MPI=ON)"; }

World::World(int&, char**&) {
  if (const int processes = launched_processes(); processes > 1)
    throw Error("started as " + std::to_string(processes) +
                " processes, but this convergent was built without MPI (configure with -DCONVERGENT_MPI=ON)");
}
World::~World() = default;

std::string World::first_failure(const std::string& message) const { return message; }
void World::gather_in_rank_order(const std::string&, const std::function<void(int, std::string)>&) const {}
bool World::stop_requested() const { return false; }

}  // namespace convergent::mpi

// The processes of one job: MPI_COMM_WORLD's ranks when launched by mpirun or srun with MPI compiled
// (world_mpi.cpp), else this process alone (world_single.cpp). align splits the inputs across them; rank 0
// merges the Moments in rank order and writes the outputs.
#pragma once

#include <cstdlib>
#include <functional>
#include <string>

namespace convergent::mpi {

// How many processes a launcher started for this job step (mpirun's OMPI_COMM_WORLD_SIZE, srun's
// SLURM_STEP_NUM_TASKS), 1 when none did. Each of them would run the whole study unless they meet over MPI.
inline int launched_processes() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS"})
    if (const char* value = std::getenv(name); value && std::atoi(value) > 1) return std::atoi(value);
  return 1;
}

// "compiled (Open MPI v4.1.4, ...)" or "not compiled", for --version; needs no MPI_Init.
std::string description();

class World {
 public:
  // Starts MPI when the environment says an MPI launcher started this process (OMPI_COMM_WORLD_SIZE,
  // PMIX_RANK or PMI_RANK set) and MPI is compiled; a plain run stays one process and never touches MPI.
  // Throws Error when a launcher started several processes that cannot meet (no MPI compiled, or srun
  // without --mpi=pmix): each would run the whole study and write the same outputs.
  World(int& argc, char**& argv);
  ~World();  // MPI_Finalize when MPI was started
  World(const World&) = delete;
  World& operator=(const World&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return local_rank_; }  // rank among the processes on this node (GPU choice)

  // Collective: every rank passes "" or its error message; every rank gets the message of the lowest rank
  // that failed, prefixed "rank R: " when R > 0, or "" when none failed. A rank that failed first tells
  // the others, so that stop_requested() turns true for them while they are still in their pass.
  std::string first_failure(const std::string& message) const;
  bool stop_requested() const;

  // Collective: rank 0 receives every other rank's bytes in rank order (1, 2, ...) and hands each to
  // `take` before the next arrives (so it holds one at a time); the other ranks send `bytes`. Any size
  // (sent in pieces under 1 GiB, MPI counts being int).
  void gather_in_rank_order(const std::string& bytes, const std::function<void(int, std::string)>& take) const;

 private:
  int rank_ = 0;
  int size_ = 1;
  int local_rank_ = 0;
  bool started_ = false;
};

}  // namespace convergent::mpi

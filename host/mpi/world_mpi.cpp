// World over MPI (OpenMPI or any MPI-3): the failure agreement is an MPI_Allgather of message lengths and
// then of the messages; the Moments travel point to point to rank 0 in rank order, so the merge order
// (and so the float64 rounding) never depends on which rank finishes first.
#include <mpi.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "convergent/error.hpp"
#include "mpi/world.hpp"

namespace convergent::mpi {
namespace {

constexpr int size_tag = 1, data_tag = 2, stop_tag = 3;
constexpr std::int64_t piece = std::int64_t{1} << 30;  // bytes per MPI_Send: counts are int

void check(int code, const char* call) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  throw Error(std::string(call) + " failed: " + std::string(text, static_cast<std::size_t>(length)));
}

bool launched_by_mpi() {
  return std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMIX_RANK") || std::getenv("PMI_RANK");
}

}  // namespace

std::string description() {
  char text[MPI_MAX_LIBRARY_VERSION_STRING];
  int length = 0;
  MPI_Get_library_version(text, &length);
  std::string library(text, static_cast<std::size_t>(length));
  library = library.substr(0, library.find_first_of(",\n"));  // "Open MPI v4.1.4", without the build details
  return "compiled (" + library + "; mpirun -np K convergent align ...)";
}

World::World(int& argc, char**& argv) {
  if (!launched_by_mpi()) {
    if (const int processes = launched_processes(); processes > 1)
      throw Error("started as " + std::to_string(processes) +
                  " processes without an MPI launch (srun needs --mpi=pmix): each would run the whole study");
    return;
  }
  check(MPI_Init(&argc, &argv), "MPI_Init");
  started_ = true;
  // Errors come back as codes (checked above), never as MPI's default abort of the whole job.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  MPI_Comm node;
  check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node), "MPI_Comm_split_type");
  MPI_Comm_rank(node, &local_rank_);
  MPI_Comm_free(&node);
}

World::~World() {
  if (started_) MPI_Finalize();
}

std::string World::first_failure(const std::string& message) const {
  if (size_ == 1) return message;
  // A failed rank first tells the others, which may be mid-pass: they see it at their next batch
  // (stop_requested) instead of finishing their part for nothing.
  static char nothing = 0;
  std::vector<MPI_Request> stops;
  if (!message.empty())
    for (int to = 0; to < size_; ++to)
      if (to != rank_) check(MPI_Isend(&nothing, 0, MPI_CHAR, to, stop_tag, MPI_COMM_WORLD, &stops.emplace_back()), "MPI_Isend");
  const int length = static_cast<int>(std::min<std::size_t>(message.size(), 4096));
  std::vector<int> lengths(static_cast<std::size_t>(size_));
  check(MPI_Allgather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, MPI_COMM_WORLD), "MPI_Allgather");
  // Every stop sent is received, so none is pending at MPI_Finalize or read by a later phase.
  for (int from = 0; from < size_; ++from)
    if (from != rank_ && lengths[static_cast<std::size_t>(from)] > 0)
      check(MPI_Recv(&nothing, 0, MPI_CHAR, from, stop_tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE), "MPI_Recv");
  if (!stops.empty()) check(MPI_Waitall(static_cast<int>(stops.size()), stops.data(), MPI_STATUSES_IGNORE), "MPI_Waitall");
  const auto failed = std::find_if(lengths.begin(), lengths.end(), [](int l) { return l > 0; });
  if (failed == lengths.end()) return "";
  const int root = static_cast<int>(failed - lengths.begin());
  std::string text(static_cast<std::size_t>(*failed), '\0');
  if (rank_ == root) text = message.substr(0, static_cast<std::size_t>(length));
  check(MPI_Bcast(text.data(), *failed, MPI_CHAR, root, MPI_COMM_WORLD), "MPI_Bcast");
  return root == 0 ? text : "rank " + std::to_string(root) + ": " + text;
}

void World::gather_in_rank_order(const std::string& bytes, const std::function<void(int, std::string)>& take) const {
  if (rank_ != 0) {
    const std::uint64_t size = bytes.size();
    check(MPI_Send(&size, 1, MPI_UINT64_T, 0, size_tag, MPI_COMM_WORLD), "MPI_Send");
    for (std::int64_t at = 0; at < static_cast<std::int64_t>(size); at += piece)
      check(MPI_Send(bytes.data() + at, static_cast<int>(std::min<std::int64_t>(piece, size - at)), MPI_CHAR, 0, data_tag,
                     MPI_COMM_WORLD),
            "MPI_Send");
    return;
  }
  for (int from = 1; from < size_; ++from) {
    std::uint64_t size = 0;
    check(MPI_Recv(&size, 1, MPI_UINT64_T, from, size_tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE), "MPI_Recv");
    std::string received(size, '\0');
    for (std::int64_t at = 0; at < static_cast<std::int64_t>(size); at += piece)
      check(MPI_Recv(received.data() + at, static_cast<int>(std::min<std::int64_t>(piece, size - at)), MPI_CHAR, from,
                     data_tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE),
            "MPI_Recv");
    take(from, std::move(received));
  }
}

bool World::stop_requested() const {
  if (size_ == 1) return false;
  int flag = 0;
  MPI_Iprobe(MPI_ANY_SOURCE, stop_tag, MPI_COMM_WORLD, &flag, MPI_STATUS_IGNORE);
  return flag != 0;
}

}  // namespace convergent::mpi

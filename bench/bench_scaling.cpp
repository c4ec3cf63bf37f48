// Strong scaling of `convergent align` over MPI ranks: one study (two nets of float32 activations with a
// shared factor), the same command as 1 process and under `mpirun -np K`, each rank on 1 CPU thread (or
// its own GPU with --backend cuda). The anchor is the one-process run of the same study in the same run;
// with 2 threads in one process for comparison. Each figure is the best of --repeats runs.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "io/npy.hpp"

namespace {

using namespace convergent;

void write_net(const std::string& path, std::int64_t rows, std::int64_t units, std::uint64_t seed) {
  bench::Gaussian shared(7), own(seed);
  std::vector<float> v(static_cast<std::size_t>(rows * units));
  for (std::int64_t r = 0; r < rows; ++r) {
    const double s = shared();
    for (std::int64_t u = 0; u < units; ++u) v[r * units + u] = static_cast<float>(std::max(0.0, s * (u % 4) + own()));
  }
  write_npy(path, v.data(), {rows, units});
}

// Best wall time of `repeats` runs of a shell command; stops the program when it fails.
double best_seconds(const std::string& command, int repeats) {
  double best = 1e300;
  for (int k = 0; k < repeats; ++k) {
    const auto start = std::chrono::steady_clock::now();
    if (std::system((command + " > /dev/null").c_str()) != 0) {
      std::cerr << "bench_scaling: failed: " << command << "\n";
      std::exit(1);
    }
    best = std::min(best, bench::seconds_since(start));
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  std::int64_t rows = 200000, units = 256;
  int max_ranks = 2, repeats = 3;
  std::string backend = "cpu";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--rows") rows = std::stoll(value());
    else if (arg == "--units") units = std::stoll(value());
    else if (arg == "--ranks") max_ranks = std::stoi(value());
    else if (arg == "--repeats") repeats = std::stoi(value());
    else if (arg == "--backend") backend = value();
    else {
      std::cerr << "usage: bench_scaling [--rows N] [--units U per net] [--ranks K] [--repeats R] [--backend cpu|cuda]\n";
      return 1;
    }
  }
  const auto dir = std::filesystem::temp_directory_path() / ("bench-scaling-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  write_net((dir / "a.npy").string(), rows, units, 1);
  write_net((dir / "b.npy").string(), rows, units, 2);
  const std::string study = bench::shell_quote((dir / "a.npy").string()) + " " + bench::shell_quote((dir / "b.npy").string()) +
                            " --backend " + backend + " --analyses none --clusters none --no-report --out " +
                            bench::shell_quote((dir / "out").string());
  const std::string cli = bench::shell_quote(CONVERGENT_CLI_PATH);
  const std::string mpirun = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 " +
                             bench::shell_quote(CONVERGENT_MPIEXEC) + " --oversubscribe --bind-to none -np ";
  const double flop = 2.0 * static_cast<double>(rows) * static_cast<double>(2 * units) * static_cast<double>(2 * units);
  std::cout << "bench_scaling: align of 2 nets x " << units << " units, " << rows << " float32 rows ("
            << 2.0 * rows * units * 4 / 1e6 << " MB), --backend " << backend << ", analyses none; " << bench::cpu_model()
            << ", " << ::sysconf(_SC_NPROCESSORS_ONLN) << " cores; best of " << repeats << "\n";
  const double one = best_seconds(cli + " align " + study + " --threads 1", repeats);
  std::printf("  %-28s %7.3f s  %6.2f GFLOP/s  (anchor)\n", "1 process, 1 thread", one, flop / one / 1e9);
  const double threads = best_seconds(cli + " align " + study + " --threads 2", repeats);
  std::printf("  %-28s %7.3f s  %6.2f GFLOP/s  speedup %.2fx\n", "1 process, 2 threads", threads, flop / threads / 1e9,
              one / threads);
  for (int k = 1; k <= max_ranks; ++k) {
    const double t = best_seconds(mpirun + std::to_string(k) + " " + cli + " align " + study + " --threads 1", repeats);
    std::printf("  %-28s %7.3f s  %6.2f GFLOP/s  speedup %.2fx\n",
                ("mpirun -np " + std::to_string(k) + ", 1 thread each").c_str(), t, flop / t / 1e9, one / t);
  }
  std::filesystem::remove_all(dir);
  return 0;
}

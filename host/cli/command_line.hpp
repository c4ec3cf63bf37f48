// The `convergent` command line as a function, so that its parsing can be fuzzed without running a job
// (fuzz/fuzz_command_line.cpp); main() in main.cpp is its only other caller.
#pragma once

namespace convergent::cli {

enum class CliMode {
  run,         // parse, check and run the subcommand
  check_only,  // parse the command line and run every check that needs no file, then return: nothing is
               // read, written or printed beyond CLI11's own messages (--help, parse errors)
};

// Parses argv (argv[0] is the program; mutable, as MPI_Init may take its own arguments out) and, in
// CliMode::run, runs the subcommand. Returns the exit code:
// 0 on success and for --help, 1 for any mistake on the command line or bad input (the message on stderr),
// 130 when interrupted. Never throws.
int run_command_line(int argc, char** argv, CliMode mode);

}  // namespace convergent::cli

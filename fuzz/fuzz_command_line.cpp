// libFuzzer target: the command line of `convergent` (align, match and the other subcommands), parsed
// and checked (CliMode::check_only: CLI11's parsing, then every check a subcommand makes before it reads a
// file, such as net names, --analyses, --lasso-alpha, --clusters, --rows, MI options) and never run. The
// bytes are the arguments after the program name, separated by NUL bytes. Any exit code is a correct
// answer; a crash, a sanitizer report, a leak or a hang is a bug.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "cli/command_line.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::string> arguments{"convergent"};
  std::string current;
  for (std::size_t i = 0; i < size; ++i) {
    if (data[i] == 0) {
      arguments.push_back(current);
      current.clear();
    } else {
      current.push_back(static_cast<char>(data[i]));
    }
  }
  if (size > 0) arguments.push_back(current);
  std::vector<char*> argv;
  for (std::string& argument : arguments) argv.push_back(argument.data());
  argv.push_back(nullptr);
  convergent::cli::run_command_line(static_cast<int>(arguments.size()), argv.data(),
                                    convergent::cli::CliMode::check_only);
  return 0;
}

// OutputDir: staged writes, published together.
#include "io/outputs.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "convergent/error.hpp"

namespace convergent {

OutputDir::OutputDir(std::string dir) : dir_(std::move(dir)) {
  std::error_code ec;
  created_ = !std::filesystem::exists(dir_, ec);
  std::filesystem::create_directories(dir_, ec);
  if (ec) throw Error(dir_ + ": cannot create the output directory: " + ec.message());
  if (!std::filesystem::is_directory(dir_)) throw Error(dir_ + ": the output path exists and is not a directory");
  const std::string probe = dir_ + "/.convergent-probe-" + std::to_string(::getpid());
  std::FILE* f = std::fopen(probe.c_str(), "w");
  if (!f) throw Error(dir_ + ": the output directory is not writable: " + std::strerror(errno));
  std::fclose(f);
  std::remove(probe.c_str());
}

OutputDir::~OutputDir() {
  for (const auto& [temporary, final_path] : staged_) std::remove(temporary.c_str());
  if (created_ && !committed_) {
    std::error_code ec;
    std::filesystem::remove(dir_, ec);  // only if empty: a failed job leaves no trace
  }
}

std::string OutputDir::stage(const std::string& name) {
  const std::string temporary = dir_ + "/." + name + ".partial-" + std::to_string(::getpid());
  staged_.emplace_back(temporary, dir_ + "/" + name);
  return temporary;
}

std::string OutputDir::staged_path(const std::string& name) const {
  const std::string final_path = dir_ + "/" + name;
  for (const auto& [temporary, target] : staged_)
    if (target == final_path) return temporary;
  return "";
}

void OutputDir::commit() {
  for (const auto& [temporary, final_path] : staged_)
    if (std::rename(temporary.c_str(), final_path.c_str()) != 0)
      throw Error(final_path + ": cannot move the finished file into place: " + std::strerror(errno));
  staged_.clear();
  committed_ = true;
}

void write_text_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw Error(path + ": cannot create: " + std::strerror(errno));
  out << text;
  out.close();
  if (!out) throw Error(path + ": write failed (disk full?)");
}

}  // namespace convergent

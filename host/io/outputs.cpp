// OutputDir: a job's outputs staged in a sibling directory and put in place by one rename.
#include "io/outputs.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>

#include "convergent/error.hpp"

namespace convergent {
namespace {

namespace fs = std::filesystem;

// The staging directory of the live OutputDir, for a fatal-signal handler (plain bytes: no allocation there).
char staging_path_for_signals[4096] = {};

// The staging directory or temporary file of the job in progress, shared with a watchdog thread
// (abandon_outputs_in_progress): whoever holds the mutex either puts it in place or removes it.
struct InProgress {
  std::mutex mutex;
  std::string path;     // "" when none
  bool placed = false;  // the last one was put in place
};
InProgress in_progress;

void begin_in_progress(const std::string& path) {
  const std::lock_guard<std::mutex> lock(in_progress.mutex);
  in_progress.path = path;
  in_progress.placed = false;
}

// Removes `path` (a file or a directory tree); "" when done, else why not.
std::string remove_tree(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  return ec ? ec.message() : "";
}

// DIR as an absolute path with symbolic links resolved and without a trailing '/', so that its parent and
// name are what the user meant ("out/", ".", "a/../b", a link to a directory elsewhere).
fs::path target_of(const std::string& dir) {
  if (dir.empty()) throw Error("the output directory is an empty string");
  std::error_code ec;
  fs::path target = fs::weakly_canonical(fs::absolute(dir), ec);
  if (ec) throw Error(dir + ": cannot resolve the output directory's path: " + ec.message());
  if (!target.has_filename()) target = target.parent_path();
  if (target == target.root_path()) throw Error(dir + ": the output directory cannot be the root directory");
  return target;
}

// An earlier output of convergent: what the swap may replace. Anything else holding files is the user's.
bool is_earlier_output(const fs::path& dir) {
  std::error_code ec;
  if (fs::is_empty(dir, ec) && !ec) return true;
  std::ifstream in(dir / "summary.json");
  if (!in) return false;
  const nlohmann::json summary = nlohmann::json::parse(in, nullptr, false);
  return summary.is_object() && (summary.contains("run") || summary.contains("convergent_version"));
}

void check_replaceable(const std::string& dir, const fs::path& target) {
  if (!is_earlier_output(target))
    throw Error(dir + ": the directory holds files that are not a convergent output (no summary.json of an "
                "earlier run); the outputs replace the whole directory, so choose a new or empty one");
}

// Puts `from` in place of the existing directory `to` in one step (both in one parent): `to`'s earlier
// content ends at `from`. Falls back to two renames where the file system has no RENAME_EXCHANGE.
void exchange(const std::string& dir, const fs::path& from, const fs::path& to) {
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_EXCHANGE) == 0) return;
  if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
    throw Error(dir + ": cannot swap the finished outputs with the earlier ones: " + std::strerror(errno) +
                "; the earlier outputs are untouched");
  const fs::path aside = from.string() + "-earlier";
  if (::rename(to.c_str(), aside.c_str()) != 0)
    throw Error(dir + ": cannot move the earlier outputs aside: " + std::strerror(errno) +
                "; the earlier outputs are untouched");
  if (::rename(from.c_str(), to.c_str()) != 0) {
    const int error = errno;
    ::rename(aside.c_str(), to.c_str());
    throw Error(dir + ": cannot move the finished outputs into place: " + std::strerror(error) +
                "; the earlier outputs were put back");
  }
  ::rename(aside.c_str(), from.c_str());
}

}  // namespace

OutputDir::OutputDir(std::string dir) : dir_(std::move(dir)) {
  const fs::path target = target_of(dir_);
  std::error_code ec;
  if (fs::exists(target, ec)) {
    if (!fs::is_directory(target)) throw Error(dir_ + ": the output path exists and is not a directory");
    check_replaceable(dir_, target);
    struct stat self {}, parent {};
    if (::stat(target.c_str(), &self) == 0 && ::stat(target.parent_path().c_str(), &parent) == 0 &&
        self.st_dev != parent.st_dev)
      throw Error(dir_ + ": the output directory is a mount point; the outputs replace it by a rename, which "
                  "cannot cross file systems: choose a directory inside it");
  }
  fs::create_directories(target.parent_path(), ec);
  if (ec) throw Error(dir_ + ": cannot create the output directory's parent: " + ec.message());
  staging_ = (target.parent_path() / ("." + target.filename().string() + ".partial-" + std::to_string(::getpid())))
                 .string();
  remove_tree(staging_);  // a leftover of a killed process that had our pid
  if (::mkdir(staging_.c_str(), 0777) != 0)
    throw Error(dir_ + ": cannot write beside the output directory (" + staging_ + "): " + std::strerror(errno));
  begin_in_progress(staging_);
  if (staging_.size() < sizeof staging_path_for_signals)
    std::memcpy(staging_path_for_signals, staging_.c_str(), staging_.size() + 1);
}

OutputDir::~OutputDir() {
  staging_path_for_signals[0] = '\0';
  if (committed_) return;
  const std::lock_guard<std::mutex> lock(in_progress.mutex);
  in_progress.path.clear();
  // A failed job leaves no trace, and DIR as it was.
  if (const std::string why = remove_tree(staging_); !why.empty())
    std::cerr << "convergent: warning: cannot remove the unfinished outputs in " << staging_ << " (" << why
              << "); remove that directory by hand\n";
}

std::string OutputDir::stage(const std::string& name) {
  check_stop();
  staged_.push_back(name);
  return staging_ + "/" + name;
}

std::string OutputDir::staged_path(const std::string& name) const {
  for (const std::string& staged : staged_)
    if (staged == name) return staging_ + "/" + name;
  return "";
}

void OutputDir::commit() {
  const fs::path target = target_of(dir_);
  const std::lock_guard<std::mutex> lock(in_progress.mutex);
  check_stop();
  // The staging directory becomes DIR in one step: renamed when DIR does not exist, exchanged with it when
  // it does (the earlier output then sits at the staging name and is removed).
  if (::rename(staging_.c_str(), target.c_str()) != 0) {
    if (errno != ENOTEMPTY && errno != EEXIST)
      throw Error(dir_ + ": cannot move the finished outputs into place: " + std::strerror(errno) +
                  "; the earlier outputs, if any, are untouched");
    check_replaceable(dir_, target);  // again: files may have been put there during the job
    exchange(dir_, staging_, target);
  }
  committed_ = true;
  in_progress.placed = true;
  in_progress.path.clear();
  staging_path_for_signals[0] = '\0';
  std::error_code ec;
  if (!fs::exists(staging_, ec)) return;
  if (const std::string why = remove_tree(staging_); !why.empty())
    std::cerr << "convergent: warning: the outputs are in place, but the earlier ones, moved to " << staging_
              << ", cannot be removed (" << why << "); remove that directory by hand\n";
}

const char* OutputDir::staging_for_signal_handler() { return staging_path_for_signals; }

bool abandon_outputs_in_progress() noexcept {
  in_progress.mutex.lock();  // held until the process ends: nothing is put in place after this
  if (in_progress.placed) {
    in_progress.mutex.unlock();
    return false;
  }
  if (!in_progress.path.empty()) remove_tree(in_progress.path);
  return true;
}

void write_text_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw Error(path + ": cannot create: " + std::strerror(errno));
  out << text;
  out.close();
  if (!out) throw Error(path + ": write failed (disk full?)");
}

void check_file_output(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec))
    throw Error(path + ": is a directory; --out names the file to write, not a directory");
}

void write_file_atomically(const std::string& path, const std::string& bytes) {
  const fs::path target(path);
  const fs::path temporary =
      target.parent_path() / ("." + target.filename().string() + ".partial-" + std::to_string(::getpid()));
  std::error_code ec;
  if (target.has_parent_path()) fs::create_directories(target.parent_path(), ec);
  if (ec) throw Error(path + ": cannot create its directory: " + ec.message());
  begin_in_progress(temporary.string());
  try {
    write_text_file(temporary.string(), bytes);
  } catch (...) {
    const std::lock_guard<std::mutex> lock(in_progress.mutex);
    in_progress.path.clear();
    std::remove(temporary.c_str());
    throw;
  }
  const std::lock_guard<std::mutex> lock(in_progress.mutex);
  in_progress.path.clear();
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    const int error = errno;
    std::remove(temporary.c_str());
    throw Error(path + ": cannot move the finished file into place: " + std::strerror(error));
  }
  in_progress.placed = true;
}

}  // namespace convergent

// Outputs that appear whole or not at all. A job's output directory is built as a hidden sibling
// (.NAME.partial-PID beside NAME) and put in place by one rename when the whole job has succeeded; an
// existing directory of an earlier run is swapped out in the same step (renameat2 RENAME_EXCHANGE) and
// then removed, so no stale file of that run survives and a failed run leaves it untouched. Single files
// beside other things (report.html, stats files) go through write_file_atomically.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace convergent {

class OutputDir {
 public:
  // Checks DIR (an existing DIR must be a directory that is empty or holds an earlier convergent output,
  // that is a summary.json with a `run` section, so that a mistyped --out never deletes a user's files; it
  // must not be a mount point, since a rename cannot cross file systems), creates its parents, and creates
  // the staging directory beside it (beside the directory a symbolic link DIR points to), so that an
  // unwritable place fails before any long work. Throws Error naming the directory.
  explicit OutputDir(std::string dir);
  // Removes the staging directory unless committed; when it cannot (the place became read-only), says so
  // on stderr, naming it.
  ~OutputDir();
  OutputDir(const OutputDir&) = delete;
  OutputDir& operator=(const OutputDir&) = delete;

  const std::string& dir() const { return dir_; }
  // The path to write output `name` to (inside the staging directory). It becomes DIR/name on commit().
  // Calls the stop check first.
  std::string stage(const std::string& name);
  // The staged path of output `name`, or "" when it was not staged: lets a later step of the same job
  // (report.html) read what earlier steps staged before anything is committed.
  std::string staged_path(const std::string& name) const;
  // A function that throws when the job must stop (an interruption): called by stage(), by writers
  // between rows of a large matrix (check_stop) and by commit() before anything is put in place.
  void set_stop_check(std::function<void()> check) { stop_check_ = std::move(check); }
  void check_stop() const {
    if (stop_check_) stop_check_();
  }
  // Puts the staging directory in place as DIR in one rename (swapping out an earlier DIR, which is then
  // removed). Throws Error naming DIR when the rename fails, or what the stop check throws; DIR is then
  // as it was before the job.
  void commit();
  // The staging directory, removed by rmdir (an async-signal-safe call) from a fatal-signal handler while
  // it is still empty: it is empty until the outputs are written, which follows every read of the inputs.
  static const char* staging_for_signal_handler();

 private:
  std::string dir_;
  std::string staging_;
  bool committed_ = false;
  std::vector<std::string> staged_;  // names
  std::function<void()> stop_check_;
};

// For a watchdog that ends the process when a job does not stop in time (another thread than the job's):
// removes the staging directory or temporary file of the job in progress, unless it is being or has been
// put in place, and from then on keeps any from being put in place. Returns false when the job's outputs
// are already in place (the job is finishing: let it), true otherwise (nothing of the job is left; the
// caller exits the process at once).
bool abandon_outputs_in_progress() noexcept;

// Writes `text` to `path`, throwing Error naming the path on failure (a full disk included).
void write_text_file(const std::string& path, const std::string& text);

// Before the work of a job whose output is one file (stats, merge, report): throws Error naming `path` when
// it is an existing directory, which the final rename could not replace.
void check_file_output(const std::string& path);

// Writes `bytes` to `path` through a temporary file beside it and a rename: `path` is either its earlier
// content or the new one, never a part. Throws Error naming the path.
void write_file_atomically(const std::string& path, const std::string& bytes);

}  // namespace convergent

// Output files that appear whole or not at all: every file is written under a temporary name in the
// output directory and renamed into place only when the whole job has succeeded.
#pragma once

#include <string>
#include <vector>

namespace convergent {

class OutputDir {
 public:
  // Creates the directory (and its parents) if needed and checks that files can be created in it, so an
  // unwritable directory fails before any long work. Throws Error naming the directory.
  explicit OutputDir(std::string dir);
  ~OutputDir();  // removes staged files that were never committed, and the directory if it made it
  OutputDir(const OutputDir&) = delete;
  OutputDir& operator=(const OutputDir&) = delete;

  const std::string& dir() const { return dir_; }
  // A temporary path for output `name`; write the file there. It becomes DIR/name on commit().
  std::string stage(const std::string& name);
  // The temporary path of output `name` staged so far, or "" when it was not staged: lets a later step of
  // the same job (report.html) read what earlier steps staged before anything is committed.
  std::string staged_path(const std::string& name) const;
  // Renames every staged file into place.
  void commit();

 private:
  std::string dir_;
  bool created_ = false;    // the directory did not exist before this job
  bool committed_ = false;
  std::vector<std::pair<std::string, std::string>> staged_;  // (temporary path, final path)
};

// Writes `text` to `path`, throwing Error naming the path on failure.
void write_text_file(const std::string& path, const std::string& text);

}  // namespace convergent

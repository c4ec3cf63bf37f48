// The .npz zip store through libzip: archives are built in and read from memory (zip_source_buffer), so
// that the same bytes go to a file or to MPI rank 0.
#include "io/npz.hpp"

#include <zip.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>

#include "convergent/error.hpp"

namespace convergent {
namespace {

struct ZipError {
  zip_error_t error;
  ZipError() { zip_error_init(&error); }
  ~ZipError() { zip_error_fini(&error); }
  std::string text() { return zip_error_strerror(&error); }
};

struct SourceFree {
  void operator()(zip_source_t* s) const { zip_source_free(s); }
};
struct ArchiveDiscard {
  void operator()(zip_t* z) const { zip_discard(z); }
};
struct FileClose {
  void operator()(zip_file_t* f) const { zip_fclose(f); }
};
using Source = std::unique_ptr<zip_source_t, SourceFree>;
using Archive = std::unique_ptr<zip_t, ArchiveDiscard>;

// 1980-01-01 00:00, the zip epoch, in local time: libzip writes a member's time through localtime(), so
// this gives the same DOS date and time fields (and bytes) in every time zone.
std::time_t zip_epoch() {
  std::tm epoch{};
  epoch.tm_year = 80;
  epoch.tm_mday = 1;
  epoch.tm_isdst = -1;
  return std::mktime(&epoch);
}

[[noreturn]] void build_failed(const std::string& what) { throw Error("building a stats archive: " + what); }

}  // namespace

std::string npz_bytes(std::vector<NpzMember> members) {
  ZipError e;
  Source target(zip_source_buffer_create(nullptr, 0, 0, &e.error));
  if (!target) build_failed(e.text());
  zip_source_keep(target.get());  // the archive frees its source on close; the bytes are read from it after
  Archive archive(zip_open_from_source(target.get(), ZIP_TRUNCATE, &e.error));
  if (!archive) {
    zip_source_free(target.get());  // the reference zip_open_from_source did not take
    build_failed(e.text());
  }
  const std::time_t epoch = zip_epoch();
  for (const NpzMember& m : members) {
    zip_source_t* data = zip_source_buffer(archive.get(), m.bytes.data(), m.bytes.size(), 0);  // no copy
    const zip_int64_t index = data ? zip_file_add(archive.get(), m.name.c_str(), data, ZIP_FL_ENC_UTF_8) : -1;
    if (index < 0) {
      if (data) zip_source_free(data);
      build_failed(zip_strerror(archive.get()));
    }
    if (zip_set_file_compression(archive.get(), index, ZIP_CM_STORE, 0) != 0 ||
        zip_file_set_mtime(archive.get(), index, epoch, 0) != 0)
      build_failed(zip_strerror(archive.get()));
  }
  if (zip_close(archive.get()) != 0) build_failed(zip_strerror(archive.get()));
  archive.release();  // zip_close freed it
  members.clear();
  members.shrink_to_fit();

  zip_stat_t st;
  if (zip_source_open(target.get()) != 0) build_failed(zip_error_strerror(zip_source_error(target.get())));
  if (zip_source_stat(target.get(), &st) != 0 || !(st.valid & ZIP_STAT_SIZE)) build_failed("no archive size");
  std::string out(st.size, '\0');
  std::size_t at = 0;
  while (at < out.size()) {
    const zip_int64_t got = zip_source_read(target.get(), out.data() + at, out.size() - at);
    if (got <= 0) break;
    at += static_cast<std::size_t>(got);
  }
  zip_source_close(target.get());
  if (at != out.size()) build_failed("the archive could not be read back");
  return out;
}

std::vector<NpzMember> parse_npz(const std::string& path, const std::string& bytes) {
  ZipError e;
  Source source(zip_source_buffer_create(bytes.data(), bytes.size(), 0, &e.error));
  if (!source) throw Error(path + ": " + e.text());
  Archive archive(zip_open_from_source(source.get(), ZIP_RDONLY | ZIP_CHECKCONS, &e.error));
  if (!archive) {
    // A file cut short loses its end record first: a zip start without a readable end is "truncated".
    if (bytes.compare(0, 4, "PK\x03\x04") == 0)
      throw Error(path + ": truncated or damaged (" + std::to_string(bytes.size()) + " bytes; " + e.text() +
                  "): copy the file again or recompute it");
    throw Error(path + ": not a convergent stats file (" + std::to_string(bytes.size()) + " bytes, " + e.text() +
                "; `convergent stats` writes them)");
  }
  source.release();  // the archive owns it now
  std::vector<NpzMember> members;
  const zip_int64_t count = zip_get_num_entries(archive.get(), 0);
  for (zip_int64_t k = 0; k < count; ++k) {
    zip_stat_t st;
    if (zip_stat_index(archive.get(), k, 0, &st) != 0 || !(st.valid & ZIP_STAT_NAME) || !(st.valid & ZIP_STAT_SIZE))
      throw Error(path + ": damaged (" + zip_strerror(archive.get()) + ")");
    NpzMember m{st.name, std::string(st.size, '\0')};
    std::unique_ptr<zip_file_t, FileClose> file(zip_fopen_index(archive.get(), k, 0));
    if (!file) throw Error(path + ": member '" + m.name + "': " + zip_strerror(archive.get()));
    // libzip checks the CRC-32 when a read reaches the member's end: read past it once.
    zip_int64_t got = zip_fread(file.get(), m.bytes.data(), m.bytes.size());
    char past = 0;
    if (got == static_cast<zip_int64_t>(m.bytes.size())) got = zip_fread(file.get(), &past, 1) == 0 ? got : -1;
    if (got != static_cast<zip_int64_t>(m.bytes.size())) {
      zip_error_t* error = zip_file_get_error(file.get());
      if (zip_error_code_zip(error) == ZIP_ER_CRC)
        throw Error(path + ": member '" + m.name +
                    "' fails its CRC-32 check: the file was damaged or changed after it was written");
      throw Error(path + ": member '" + m.name + "' cannot be read (" + zip_error_strerror(error) +
                  "): the file is truncated or damaged");
    }
    members.push_back(std::move(m));
  }
  return members;
}

std::string read_file_bytes(const std::string& path) {
  std::error_code ec;
  const std::filesystem::file_status status = std::filesystem::status(path, ec);
  if (std::filesystem::is_directory(status)) throw Error(path + ": a directory, not a file");
  // A FIFO or a device would block or never end: refused before it is opened.
  if (std::filesystem::exists(status) && !std::filesystem::is_regular_file(status))
    throw Error(path + ": cannot read: not a regular file");
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw Error(path + ": cannot open: " + std::strerror(errno));
  std::string bytes(static_cast<std::size_t>(in.tellg()), '\0');
  in.seekg(0);
  if (!in.read(bytes.data(), static_cast<std::streamsize>(bytes.size())))
    throw Error(path + ": cannot read: " + std::strerror(errno));
  return bytes;
}

}  // namespace convergent

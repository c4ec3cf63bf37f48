// The .npz zip store: local headers, data, central directory, ZIP64 end records (PKWARE APPNOTE 6.3,
// sections 4.3 and 4.5.3). Every size and offset field of the classic records holds 0xFFFFFFFF (or
// 0xFFFF) and the true value sits in the ZIP64 extra field, as the note allows for any member.
#include "io/npz.hpp"

#include <zlib.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "convergent/error.hpp"

namespace convergent {
namespace {

constexpr std::uint32_t local_signature = 0x04034b50, central_signature = 0x02014b50;
constexpr std::uint32_t end_signature = 0x06054b50, end64_signature = 0x06064b50, locator_signature = 0x07064b50;
constexpr std::uint16_t zip64_version = 45, zip64_extra_id = 0x0001;
constexpr std::uint16_t dos_date_1980 = (0 << 9) | (1 << 5) | 1;  // 1980-01-01, the zip epoch: no clock in the bytes
constexpr std::int64_t end_size = 22, locator_size = 20, end64_size = 56;

std::uint32_t crc_of(std::string_view bytes) {
  return static_cast<std::uint32_t>(
      ::crc32_z(0L, reinterpret_cast<const Bytef*>(bytes.data()), static_cast<z_size_t>(bytes.size())));
}

void put(std::string& out, std::uint64_t value, int bytes) {  // little-endian
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

// Reads little-endian fields from a byte range, refusing to run past its end.
class Reader {
 public:
  Reader(const std::string& path, const std::string& bytes) : path_(path), bytes_(bytes) {}
  std::uint64_t at(std::int64_t offset, int size) const {
    if (offset < 0 || offset + size > static_cast<std::int64_t>(bytes_.size())) truncated();
    std::uint64_t value = 0;
    for (int i = size - 1; i >= 0; --i) value = (value << 8) | static_cast<unsigned char>(bytes_[offset + i]);
    return value;
  }
  void expect(std::int64_t offset, std::uint32_t signature, const char* what) const {
    if (at(offset, 4) != signature)
      throw Error(path_ + ": not a convergent stats file or damaged (no " + what + " where the archive puts it)");
  }
  [[noreturn]] void truncated() const {
    throw Error(path_ + ": truncated (" + std::to_string(bytes_.size()) +
                " bytes; the archive's records point past the end): copy the file again or recompute it");
  }

 private:
  const std::string& path_;
  const std::string& bytes_;
};

}  // namespace

std::string npz_bytes(const std::vector<NpzMember>& members) {
  std::string out, central;
  for (const NpzMember& m : members) {
    const std::uint64_t offset = out.size(), size = m.bytes.size();
    const std::uint32_t crc = crc_of(m.bytes);
    auto common = [&](std::string& record) {  // version needed .. name length, shared by both headers
      put(record, zip64_version, 2);
      put(record, 0, 2);  // flags
      put(record, 0, 2);  // method: stored
      put(record, 0, 2);  // time
      put(record, dos_date_1980, 2);
      put(record, crc, 4);
      put(record, 0xffffffff, 4);  // compressed size: in the ZIP64 extra field
      put(record, 0xffffffff, 4);  // uncompressed size: likewise
      put(record, m.name.size(), 2);
    };
    put(out, local_signature, 4);
    common(out);
    put(out, 20, 2);  // extra: id, length, two sizes
    out += m.name;
    put(out, zip64_extra_id, 2);
    put(out, 16, 2);
    put(out, size, 8);
    put(out, size, 8);
    out += m.bytes;

    put(central, central_signature, 4);
    put(central, zip64_version, 2);  // made by
    common(central);
    put(central, 28, 2);  // extra: id, length, two sizes, offset
    put(central, 0, 2);   // comment length
    put(central, 0, 2);   // disk
    put(central, 0, 2);   // internal attributes
    put(central, 0, 4);   // external attributes
    put(central, 0xffffffff, 4);  // local header offset: in the extra field
    central += m.name;
    put(central, zip64_extra_id, 2);
    put(central, 24, 2);
    put(central, size, 8);
    put(central, size, 8);
    put(central, offset, 8);
  }
  const std::uint64_t central_offset = out.size(), end64_offset = central_offset + central.size();
  out += central;
  put(out, end64_signature, 4);
  put(out, end64_size - 12, 8);  // size of the rest of this record
  put(out, zip64_version, 2);
  put(out, zip64_version, 2);
  put(out, 0, 4);  // this disk
  put(out, 0, 4);  // disk of the central directory
  put(out, members.size(), 8);
  put(out, members.size(), 8);
  put(out, central.size(), 8);
  put(out, central_offset, 8);
  put(out, locator_signature, 4);
  put(out, 0, 4);
  put(out, end64_offset, 8);
  put(out, 1, 4);  // disks
  put(out, end_signature, 4);
  put(out, 0, 2);
  put(out, 0, 2);
  put(out, 0xffff, 2);
  put(out, 0xffff, 2);
  put(out, 0xffffffff, 4);
  put(out, 0xffffffff, 4);
  put(out, 0, 2);  // comment length
  return out;
}

std::vector<NpzView> parse_npz(const std::string& path, const std::string& bytes) {
  const Reader r(path, bytes);
  const auto size = static_cast<std::int64_t>(bytes.size());
  // A file cut short loses its end record first: that is what "truncated" means here.
  if (size < end_size + locator_size + end64_size || r.at(size - end_size, 4) != end_signature) {
    if (size >= 4 && r.at(0, 4) == local_signature) r.truncated();
    throw Error(path + ": not a convergent stats file (" + std::to_string(size) +
                " bytes, no zip end record; `convergent stats` writes them)");
  }
  r.expect(size - end_size - locator_size, locator_signature, "ZIP64 locator");
  const auto end64 = static_cast<std::int64_t>(r.at(size - end_size - locator_size + 8, 8));
  if (end64 != size - end_size - locator_size - end64_size) r.truncated();
  r.expect(end64, end64_signature, "ZIP64 end record");
  const std::uint64_t count = r.at(end64 + 32, 8);
  const auto central_size = static_cast<std::int64_t>(r.at(end64 + 40, 8));
  const auto central = static_cast<std::int64_t>(r.at(end64 + 48, 8));
  if (central < 0 || central_size < 0 || central + central_size != end64) r.truncated();

  std::vector<NpzView> members;
  std::int64_t at = central;
  for (std::uint64_t k = 0; k < count; ++k) {
    r.expect(at, central_signature, "central directory entry");
    const auto crc = static_cast<std::uint32_t>(r.at(at + 16, 4));
    const auto name_length = static_cast<std::int64_t>(r.at(at + 28, 2));
    const auto extra_length = static_cast<std::int64_t>(r.at(at + 30, 2));
    const auto comment_length = static_cast<std::int64_t>(r.at(at + 32, 2));
    if (r.at(at + 10, 2) != 0) throw Error(path + ": compressed members; convergent writes stored ones only");
    r.at(at + 46 + name_length + extra_length - 1, 1);
    NpzView m;
    m.name = bytes.substr(static_cast<std::size_t>(at + 46), static_cast<std::size_t>(name_length));
    const std::int64_t extra = at + 46 + name_length;
    if (extra_length != 28 || r.at(extra, 2) != zip64_extra_id)
      throw Error(path + ": member '" + m.name + "' lacks the ZIP64 sizes convergent writes");
    const auto data_size = static_cast<std::int64_t>(r.at(extra + 4, 8));
    const auto local = static_cast<std::int64_t>(r.at(extra + 20, 8));
    r.expect(local, local_signature, "local header");
    const std::int64_t data = local + 30 + static_cast<std::int64_t>(r.at(local + 26, 2)) +
                              static_cast<std::int64_t>(r.at(local + 28, 2));
    if (data_size < 0 || data + data_size > central) r.truncated();
    m.bytes = std::string_view(bytes).substr(static_cast<std::size_t>(data), static_cast<std::size_t>(data_size));
    if (crc_of(m.bytes) != crc)
      throw Error(path + ": member '" + m.name +
                  "' fails its CRC-32 check: the file was damaged or changed after it was written");
    members.push_back(std::move(m));
    at = extra + extra_length + comment_length;
  }
  return members;
}

std::string read_file_bytes(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw Error(path + ": a directory, not a file");
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw Error(path + ": cannot open: " + std::strerror(errno));
  std::string bytes(static_cast<std::size_t>(in.tellg()), '\0');
  in.seekg(0);
  if (!in.read(bytes.data(), static_cast<std::streamsize>(bytes.size())))
    throw Error(path + ": cannot read: " + std::strerror(errno));
  return bytes;
}

}  // namespace convergent

// numpy's .npz container as convergent writes it: a zip archive of stored (uncompressed) members, each
// with its CRC-32, in ZIP64 form throughout so that members past 4 GiB (a comoment of 23,000 units) need
// no second code path. numpy.load, Python's zipfile and unzip read it; read_npz reads only this form.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace convergent {

// One member: "mean.npy" (an .npy file's bytes, which numpy.load returns as an array) or any other name
// (numpy.load returns its bytes).
struct NpzMember {
  std::string name;
  std::string bytes;
};

// The archive's bytes: members in the given order, fixed timestamps (same members, same bytes).
std::string npz_bytes(const std::vector<NpzMember>& members);

// A member of a parsed archive: its bytes are a view into the archive's (no copy of a large comoment).
struct NpzView {
  std::string name;
  std::string_view bytes;
};

// The members of an archive that npz_bytes wrote, in their order, viewing `bytes` (which must outlive
// them). Throws Error naming `path` (a file name, or the rank a buffer came from) for bytes that are cut
// short, are not such an archive, or whose member's CRC-32 does not match its data (the file was changed
// or damaged after it was written).
std::vector<NpzView> parse_npz(const std::string& path, const std::string& bytes);

// The bytes of a whole file; throws Error naming the path when it cannot be read.
std::string read_file_bytes(const std::string& path);

}  // namespace convergent

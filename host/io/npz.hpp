// numpy's .npz container as convergent writes it: a zip archive (libzip) of stored (uncompressed) members,
// each with its CRC-32; libzip switches to ZIP64 records for members or archives past 4 GiB (a comoment of
// 23,000 units). numpy.load, Python's zipfile and unzip read it.
#pragma once

#include <string>
#include <vector>

namespace convergent {

// One member: "mean.npy" (an .npy file's bytes, which numpy.load returns as an array) or any other name
// (numpy.load returns its bytes).
struct NpzMember {
  std::string name;
  std::string bytes;
};

// The archive's bytes: members in the given order, stored, each dated 1980-01-01 00:00 (same members, same
// bytes). Takes the members by value and frees them once the archive is built, so that a large comoment is
// held twice at most. Throws Error when libzip cannot build the archive (out of memory).
std::string npz_bytes(std::vector<NpzMember> members);

// The members of a zip archive, in their order, each read (and its CRC-32 checked) in full. Throws Error
// naming `path` (a file name, or the rank a buffer came from) for bytes that are cut short, are not a zip
// archive, or whose member's CRC-32 does not match its data (the file was changed or damaged after it was
// written).
std::vector<NpzMember> parse_npz(const std::string& path, const std::string& bytes);

// The bytes of a whole file; throws Error naming the path when it cannot be read.
std::string read_file_bytes(const std::string& path);

}  // namespace convergent

// Faults during a run of the CLI: each gives a clear error and a non-zero exit, leaves no partial output
// and never touches an earlier result; a complete run replaces an earlier output whole (no stale file
// survives). The CLI holds itself at a named point (CONVERGENT_TEST_STOP_AT: pass, after the first batch;
// write, before the outputs are written; commit, before they are put in place) by stopping with SIGSTOP,
// so each fault lands at a known moment. As root, the test process takes a mount namespace of its own
// (gone with it) for a small tmpfs (a full disk) and a read-only bind mount (a place made read-only,
// which root's permissions would ignore); elsewhere a file-size limit and chmod stand in.
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <thread>

#include "test_util.hpp"

namespace convergent {
namespace {

namespace fs = std::filesystem;
using testing::run_cli;
using testing::ScratchDir;

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Every file of a directory by name, with its bytes.
std::map<std::string, std::string> contents(const fs::path& dir) {
  std::map<std::string, std::string> files;
  if (!fs::exists(dir)) return files;
  for (const auto& entry : fs::directory_iterator(dir)) files[entry.path().filename().string()] = read_bytes(entry.path());
  return files;
}

// Entries of `dir` whose names hold ".partial": staging left behind.
std::vector<std::string> leftovers(const fs::path& dir) {
  std::vector<std::string> names;
  if (!fs::exists(dir)) return names;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.path().filename().string().find(".partial") != std::string::npos)
      names.push_back(entry.path().filename().string());
  return names;
}

struct Outcome {
  int exit_code = -1;  // -1: killed by a signal
  int signal = 0;
  bool hung = false;  // still running after the deadline, then killed
  std::string output;
};

// Runs the CLI with `arguments` (split on spaces; paths hold none). With `stop_at`, waits until it stops
// itself there, calls `fault` with its pid, and lets it go on. `file_size_limit` caps every file it writes
// (RLIMIT_FSIZE, SIGXFSZ ignored: writes past it fail with EFBIG, as on a full disk). A run still going
// after 120 s (they take well under one) is killed and reported as hung.
Outcome run_with_fault(const ScratchDir& dir, const std::string& arguments, const std::string& stop_at,
                       const std::function<void(pid_t)>& fault, std::optional<rlim_t> file_size_limit = std::nullopt) {
  std::vector<std::string> words{CONVERGENT_CLI_PATH};
  for (std::size_t start = 0; start < arguments.size();) {
    const std::size_t space = std::min(arguments.find(' ', start), arguments.size());
    if (space > start) words.push_back(arguments.substr(start, space - start));
    start = space + 1;
  }
  const std::string log = dir.file("cli-output.txt");
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    if (!stop_at.empty()) ::setenv("CONVERGENT_TEST_STOP_AT", stop_at.c_str(), 1);
    if (file_size_limit) {
      std::signal(SIGXFSZ, SIG_IGN);
      const rlimit limit{*file_size_limit, *file_size_limit};
      ::setrlimit(RLIMIT_FSIZE, &limit);
    }
    std::vector<char*> argv;
    for (auto& w : words) argv.push_back(w.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  Outcome outcome;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  int status = 0;
  bool faulted = stop_at.empty();
  for (;;) {
    const pid_t done = ::waitpid(pid, &status, WNOHANG | WUNTRACED);
    if (done == pid && WIFSTOPPED(status) && !faulted) {
      faulted = true;
      fault(pid);
      ::kill(pid, SIGCONT);
      continue;
    }
    if (done == pid && !WIFSTOPPED(status)) break;
    if (std::chrono::steady_clock::now() > deadline) {
      outcome.hung = true;
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (WIFEXITED(status)) outcome.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) outcome.signal = WTERMSIG(status);
  outcome.output = read_bytes(log);
  return outcome;
}

// Sends `signal` to the CLI's main thread (tgkill), not to the process: the CLI is stopped at its test
// point, where every thread is, and a process-directed signal would go to whichever thread wakes first on
// SIGCONT (an OpenBLAS or watchdog thread), whose handler may then run after the main thread has passed
// the check that follows the point (under load: an earlier run committed its outputs and exited 0). The
// main thread takes its own signal before it returns from the stop, so the check sees it.
void signal_main_thread(pid_t pid, int signal) { ASSERT_EQ(::syscall(SYS_tgkill, pid, pid, signal), 0); }

// This test process's own mount namespace, where mounts vanish with the process and the CLI it starts sees
// them. Root only (unshare needs CAP_SYS_ADMIN); false where the machine does not allow it.
bool private_mount_namespace() {
  static const bool made = ::geteuid() == 0 && ::unshare(CLONE_NEWNS) == 0 &&
                           ::mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0;
  return made;
}

// A mount made by a test, detached when it ends (before the scratch directory is removed).
struct Mount {
  std::string path;
  Mount() = default;
  Mount(const Mount&) = delete;
  Mount& operator=(const Mount&) = delete;
  ~Mount() {
    if (!path.empty()) ::umount2(path.c_str(), MNT_DETACH);
  }
};

// Three nets, 4000 samples of 32 units: 63 batches of 64 rows. Outputs go under results/ (a place the
// tests can make read-only while the CLI's log, beside it, stays writable).
class Faults : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int k = 1; k <= 3; ++k) testing::write_random(dir_.file("n" + std::to_string(k) + ".npy"), 4000, 32, k);
    nets_ = dir_.file("n1.npy") + " " + dir_.file("n2.npy") + " " + dir_.file("n3.npy");
    options_ = " --backend cpu --no-report --batch-rows 64 --analyses linear_cka --clusters none --out ";
    fs::create_directories(results());
    // An earlier result in out/, which no failed run may touch.
    const auto r = run_cli("align " + dir_.file("n1.npy") + " " + dir_.file("n2.npy") + options_ + out());
    ASSERT_EQ(r.exit_code, 0) << r.output;
    earlier_ = contents(out());
    ASSERT_TRUE(earlier_.count("summary.json"));
  }
  std::string results() const { return dir_.file("results"); }
  std::string out() const { return dir_.file("results/out"); }
  std::string align_all() const { return "align " + nets_ + options_ + out(); }
  // The earlier result is intact and nothing was left beside it.
  void expect_untouched() const {
    EXPECT_TRUE(contents(out()) == earlier_) << "the earlier output changed";
    const auto left = leftovers(results());
    EXPECT_TRUE(left.empty()) << left.front() << " was left behind";
  }

  ScratchDir dir_;
  std::string nets_, options_;
  std::map<std::string, std::string> earlier_;
};

TEST_F(Faults, ACompleteRunReplacesTheEarlierOutputWithoutStaleFiles) {
  const auto r = run_cli(align_all());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contents(out()).count("corr_n3.npy"));
  // Now two nets again into the same directory: the third net's files of the run before must go.
  const auto again = run_cli("align " + dir_.file("n1.npy") + " " + dir_.file("n2.npy") + options_ + out());
  ASSERT_EQ(again.exit_code, 0) << again.output;
  const auto files = contents(out());
  for (const auto& [name, bytes] : files) EXPECT_EQ(name.find("n3"), std::string::npos) << name << " is stale";
  EXPECT_TRUE(files.count("corr_n1_n2.npy"));
  EXPECT_TRUE(leftovers(results()).empty());
}

TEST_F(Faults, ADirectoryOfOtherFilesIsRefusedBeforeAnyWork) {
  fs::create_directories(dir_.file("mine"));
  std::ofstream(dir_.file("mine/notes.txt")) << "a user's file";
  const auto r = run_cli("align " + nets_ + options_ + dir_.file("mine"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("mine: the directory holds files that are not a convergent output"), std::string::npos)
      << r.output;
  EXPECT_EQ(read_bytes(dir_.file("mine/notes.txt")), "a user's file");
  EXPECT_TRUE(leftovers(dir_.path()).empty());
}

// DIR as a symbolic link to a directory elsewhere: the outputs replace that directory (staged beside it,
// where the rename stays on one file system) and the link stays a link.
TEST_F(Faults, ALinkToAnEarlierOutputIsFollowed) {
  fs::create_symlink(out(), dir_.file("link"));
  const auto r = run_cli(align_all().substr(0, align_all().size() - out().size()) + dir_.file("link"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(fs::is_symlink(dir_.file("link")));
  EXPECT_TRUE(contents(out()).count("corr_n3.npy"));
  EXPECT_TRUE(leftovers(results()).empty());
  EXPECT_TRUE(leftovers(dir_.path()).empty());
}

// A mount point cannot be replaced by a rename: refused before any work, its content untouched.
TEST_F(Faults, AMountPointIsRefusedBeforeAnyWork) {
  if (!private_mount_namespace()) GTEST_SKIP() << "mounting needs root";
  const std::string mounted = dir_.file("results/mounted");
  fs::create_directories(mounted);
  Mount tmpfs;
  ASSERT_EQ(::mount("tmpfs", mounted.c_str(), "tmpfs", 0, "size=1m"), 0) << std::strerror(errno);
  tmpfs.path = mounted;
  const auto r = run_cli(align_all().substr(0, align_all().size() - out().size()) + mounted);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("mounted: the output directory is a mount point"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::is_empty(mounted));
  EXPECT_TRUE(leftovers(results()).empty());
}

TEST_F(Faults, BadInputLeavesTheEarlierOutputUntouched) {
  testing::write_random(dir_.file("short.npy"), 3999, 32, 9);
  const auto r = run_cli("align " + nets_ + " " + dir_.file("short.npy") + options_ + out());
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("short.npy"), std::string::npos) << r.output;
  expect_untouched();
}

TEST_F(Faults, SigintAndSigtermWhileStreamingOrWriting) {
  for (const std::string point : {"pass", "write", "commit"})
    for (const int signal : {SIGINT, SIGTERM}) {
      const auto r = run_with_fault(dir_, align_all(), point, [&](pid_t pid) { signal_main_thread(pid, signal); });
      EXPECT_EQ(r.exit_code, 130) << point << " " << signal << ": " << r.output;
      EXPECT_NE(r.output.find("interrupted; nothing was written"), std::string::npos) << r.output;
      expect_untouched();
    }
}

// A step that never checks for an interruption (a huge batch product, one LAP): the watchdog removes the
// staged outputs and ends the process 2 s after the signal. Here the first batch never returns.
TEST_F(Faults, SigtermInAStepThatNeverChecksStopsAfterTheGracePeriod) {
  const auto started = std::chrono::steady_clock::now();
  const auto r = run_with_fault(dir_, align_all(), "stall-pass", [&](pid_t pid) { ::kill(pid, SIGTERM); });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  ASSERT_FALSE(r.hung) << r.output;
  EXPECT_EQ(r.exit_code, 130) << r.output;
  EXPECT_NE(r.output.find("interrupted; nothing was written (the job was stopped 2 s after the signal"),
            std::string::npos)
      << r.output;
  EXPECT_GE(seconds, 2.0);  // the job had its grace period to stop by itself
  expect_untouched();
}

TEST_F(Faults, TheStagingDirectoryRemovedMidRun) {
  const auto r = run_with_fault(dir_, align_all(), "write", [&](pid_t) {
    for (const std::string& name : leftovers(results())) fs::remove_all(fs::path(results()) / name);
  });
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("cannot create"), std::string::npos) << r.output;
  expect_untouched();
}

// The whole place of the outputs removed (the earlier output with it): nothing is recreated there.
TEST_F(Faults, TheOutputsParentRemovedMidRun) {
  const auto r = run_with_fault(dir_, align_all(), "write", [&](pid_t) { fs::remove_all(results()); });
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("cannot create"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(results()));
}

TEST_F(Faults, TheEarlierOutputRemovedMidRunIsReplacedWhole) {
  const auto r = run_with_fault(dir_, align_all(), "pass", [&](pid_t) { fs::remove_all(out()); });
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contents(out()).count("corr_n3.npy"));
  EXPECT_TRUE(leftovers(results()).empty());
}

// results/ made read-only before the outputs are written, and after (before they are put in place). As
// root: a read-only bind mount (root ignores permissions), where nothing at all can be removed, so the
// staging directory stays and the message names it; elsewhere: chmod a-w on results/ and the staging.
TEST_F(Faults, TheOutputsPlaceMadeReadOnlyMidRun) {
  const bool mount_namespace = private_mount_namespace();
  for (const std::string point : {"write", "commit"}) {
    Mount read_only;
    const auto r = run_with_fault(dir_, align_all(), point, [&](pid_t) {
      if (mount_namespace) {
        ASSERT_EQ(::mount(results().c_str(), results().c_str(), nullptr, MS_BIND, nullptr), 0) << std::strerror(errno);
        read_only.path = results();
        ASSERT_EQ(::mount(nullptr, results().c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr), 0)
            << std::strerror(errno);
      } else {
        for (const std::string& name : leftovers(results()))
          fs::permissions(fs::path(results()) / name, fs::perms::all, fs::perm_options::remove);
        fs::permissions(results(), fs::perms::owner_write | fs::perms::group_write | fs::perms::others_write,
                        fs::perm_options::remove);
      }
    });
    if (mount_namespace) {
      ::umount2(results().c_str(), MNT_DETACH);
      read_only.path.clear();
    } else {
      fs::permissions(results(), fs::perms::owner_all, fs::perm_options::add);
      for (const std::string& name : leftovers(results()))
        fs::permissions(fs::path(results()) / name, fs::perms::owner_all, fs::perm_options::add);
    }
    EXPECT_EQ(r.exit_code, 1) << point << ": " << r.output;
    EXPECT_TRUE(r.output.find("Read-only file system") != std::string::npos ||
                r.output.find("Permission denied") != std::string::npos)
        << point << ": " << r.output;
    EXPECT_TRUE(contents(out()) == earlier_) << point << ": the earlier output changed";
    // What could not be removed is named, so the user can remove it once the place is writable again.
    for (const std::string& name : leftovers(results())) {
      EXPECT_NE(r.output.find("cannot remove the unfinished outputs in " + (fs::path(results()) / name).string()),
                std::string::npos)
          << point << ": " << r.output;
      fs::remove_all(fs::path(results()) / name);
    }
  }
}

// A full disk: a 512 KiB tmpfs holding an earlier output, filled to 16 KiB short of full.
TEST_F(Faults, AFullDiskOnASmallFileSystem) {
  if (!private_mount_namespace())
    GTEST_SKIP() << "mounting a small tmpfs needs root; AWriteFailure covers the same path through a file-size "
                    "limit";
  const std::string disk = dir_.file("disk"), earlier = dir_.file("disk/out");
  fs::create_directories(disk);
  Mount tmpfs;
  ASSERT_EQ(::mount("tmpfs", disk.c_str(), "tmpfs", 0, "size=512k"), 0) << std::strerror(errno);
  tmpfs.path = disk;
  const auto first = run_cli("align " + dir_.file("n1.npy") + " " + dir_.file("n2.npy") + options_ + earlier);
  ASSERT_EQ(first.exit_code, 0) << first.output;
  const auto before = contents(earlier);
  struct statvfs space {};
  ASSERT_EQ(::statvfs(disk.c_str(), &space), 0);
  const std::int64_t free_bytes = static_cast<std::int64_t>(space.f_bavail) * static_cast<std::int64_t>(space.f_bsize);
  ASSERT_GT(free_bytes, 16 << 10);
  std::ofstream(dir_.file("disk/filler"), std::ios::binary) << std::string(free_bytes - (16 << 10), 'x');
  const auto r = run_cli("align " + nets_ + options_ + earlier);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("write failed"), std::string::npos) << r.output;
  EXPECT_TRUE(contents(earlier) == before) << "the earlier output changed";
  EXPECT_TRUE(leftovers(disk).empty());
}

// A write failure injected by a file-size limit (every file capped at 4 KiB: each corr_*.npy takes 8 KiB).
TEST_F(Faults, AWriteFailure) {
  const auto r = run_with_fault(dir_, align_all(), "", [](pid_t) {}, rlim_t{4 << 10});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("write failed"), std::string::npos) << r.output;
  expect_untouched();
}

// An input truncated while it is read: its vanished pages raise SIGBUS, which is reported with the file.
TEST_F(Faults, AnInputTruncatedWhileItIsRead) {
  const auto r = run_with_fault(dir_, align_all(), "pass", [&](pid_t) { fs::resize_file(dir_.file("n2.npy"), 4096); });
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(dir_.file("n2.npy") + ": the file shrank"), std::string::npos) << r.output;
  expect_untouched();
}

// An input replaced by a rename while it is read: the mapping keeps the file that was opened, so the
// result is that of the original file, byte for byte.
TEST_F(Faults, AnInputReplacedWhileItIsReadGivesTheOriginalsResult) {
  ASSERT_EQ(run_cli("align " + nets_ + options_ + dir_.file("want")).exit_code, 0);
  const auto r = run_with_fault(dir_, align_all(), "pass", [&](pid_t) {
    testing::write_random(dir_.file("other.npy"), 4000, 32, 77);
    fs::rename(dir_.file("other.npy"), dir_.file("n2.npy"));
  });
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto got = contents(out()), want = contents(dir_.file("want"));
  for (auto* files : {&got, &want}) files->erase("summary.json");  // its run section differs
  EXPECT_FALSE(got.empty());
  EXPECT_TRUE(got == want);
}

// stats, merge, match and report write whole or not at all too, and a failed run keeps the earlier file.
TEST_F(Faults, TheOtherCommandsLeaveTheEarlierResultOnFailure) {
  // stats: interrupted in its pass.
  const std::string stats = dir_.file("results/all.npz");
  ASSERT_EQ(run_cli("stats " + nets_ + " --backend cpu --out " + stats).exit_code, 0);
  const std::string stats_before = read_bytes(stats);
  auto r = run_with_fault(dir_, "stats " + nets_ + " --backend cpu --batch-rows 64 --rows 0:2000 --out " + stats,
                          "pass", [](pid_t pid) { signal_main_thread(pid, SIGTERM); });
  EXPECT_EQ(r.exit_code, 130) << r.output;
  EXPECT_EQ(read_bytes(stats), stats_before);
  // merge: a write failure (the merged Moments of 96 units take 72 KiB).
  const std::string half = dir_.file("half.npz"), rest = dir_.file("rest.npz");
  ASSERT_EQ(run_cli("stats " + nets_ + " --backend cpu --rows 0:2000 --out " + half).exit_code, 0);
  ASSERT_EQ(run_cli("stats " + nets_ + " --backend cpu --rows 2000:4000 --out " + rest).exit_code, 0);
  r = run_with_fault(dir_, "merge " + half + " " + rest + " --out " + stats, "", [](pid_t) {}, rlim_t{16 << 10});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("write failed"), std::string::npos) << r.output;
  EXPECT_EQ(read_bytes(stats), stats_before);
  // match: a write failure (the tables of 100 x 100 take more than 2 KiB).
  std::vector<double> corr(100 * 100);
  for (std::size_t k = 0; k < corr.size(); ++k) corr[k] = static_cast<double>((k * 7919) % 1000) / 1000.0;
  testing::write_array(dir_.file("corr.npy"), corr, {100, 100});
  const std::string matched = dir_.file("results/matched");
  ASSERT_EQ(run_cli("match " + dir_.file("corr.npy") + " --out " + matched).exit_code, 0);
  const auto matched_before = contents(matched);
  r = run_with_fault(dir_, "match " + dir_.file("corr.npy") + " --out " + matched, "", [](pid_t) {}, rlim_t{2 << 10});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("write failed"), std::string::npos) << r.output;
  EXPECT_TRUE(contents(matched) == matched_before);
  // report: a write failure (report.html holds the plotting library: far over 64 KiB).
  const std::string report = dir_.file("results/report.html");
  ASSERT_EQ(run_cli("report " + out() + " --out " + report).exit_code, 0);
  const std::string report_before = read_bytes(report);
  r = run_with_fault(dir_, "report " + out() + " --out " + report, "", [](pid_t) {}, rlim_t{64 << 10});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("write failed"), std::string::npos) << r.output;
  EXPECT_EQ(read_bytes(report), report_before);
  EXPECT_TRUE(leftovers(results()).empty());
  EXPECT_TRUE(leftovers(dir_.path()).empty());
}

}  // namespace
}  // namespace convergent

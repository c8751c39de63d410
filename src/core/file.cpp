#include "core/file.h"

#include <cerrno>
#include <cstring>
#include <exception>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"

namespace distill {

namespace {

std::string parent_dir(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

void write_bytes(std::FILE* f, const void* data, size_t nbytes) {
  if (nbytes == 0) return;
  if (std::fwrite(data, 1, nbytes, f) != nbytes) {
    throw Error("write of {} bytes failed: {}", nbytes, std::strerror(errno ? errno : EIO));
  }
}

void write_file_atomic(const std::string& path, const std::function<void(std::FILE*)>& writer) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  // "e" = O_CLOEXEC, so a child process spawned meanwhile does not inherit the descriptor.
  std::FILE* f = std::fopen(tmp.c_str(), "wbe");
  if (f == nullptr) {
    throw Error("{}: cannot create temporary file {}: {}", path, tmp, std::strerror(errno));
  }
  // Any failure below: close, unlink the temporary, report against `path`.
  auto fail = [&](const char* what, int err) {
    if (f != nullptr) std::fclose(f);
    ::unlink(tmp.c_str());
    throw Error("{}: {} failed: {}", path, what, std::strerror(err ? err : EIO));
  };
  try {
    writer(f);
  } catch (...) {
    // A write error inside the writer is an I/O problem of this file: name the file. Anything
    // else (e.g. a validation error of the writer) is the caller's and passes through unchanged.
    int err = errno;
    if (std::ferror(f)) fail("write", err);
    std::fclose(f);
    ::unlink(tmp.c_str());
    throw;
  }
  // fflush can fail where fwrite "succeeded" into the stdio buffer (ENOSPC, EFBIG).
  if (std::fflush(f) != 0) fail("write", errno);
  if (std::ferror(f)) fail("write", errno);
  if (::fsync(::fileno(f)) != 0) fail("fsync", errno);
  int rc = std::fclose(f);
  f = nullptr;
  if (rc != 0) fail("close", errno);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) fail("rename", errno);
  fsync_dir(parent_dir(path));
}

void write_file_atomic(const std::string& path, const void* data, size_t nbytes) {
  write_file_atomic(path, [&](std::FILE* f) { write_bytes(f, data, nbytes); });
}

void fsync_dir(const std::string& dir) {
  const std::string d = dir.empty() ? "." : dir;
  int fd = ::open(d.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw Error("{}: cannot open directory for fsync: {}", d, std::strerror(errno));
  if (::fsync(fd) != 0) {
    int err = errno;
    ::close(fd);
    // Some filesystems (tmpfs on old kernels, some FUSE/network mounts) cannot fsync a
    // directory; there is nothing more durable to ask for, so that is not an error.
    if (err == EINVAL || err == EROFS) return;
    throw Error("{}: directory fsync failed: {}", d, std::strerror(err));
  }
  ::close(fd);
}

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

std::string read_file_text(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rbe");
  if (f == nullptr) throw Error("{}: cannot open: {}", path, std::strerror(errno));
  std::string text;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  bool failed = std::ferror(f) != 0;
  int err = errno;
  std::fclose(f);
  // Reading a directory opens fine and fails here with EISDIR.
  if (failed) throw Error("{}: read failed: {}", path, std::strerror(err ? err : EIO));
  return text;
}

}  // namespace distill

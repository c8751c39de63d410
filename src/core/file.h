// Whole-file helpers: crash-safe replacement of a file, directory fsync, small text reads.
#pragma once
#include <cstddef>
#include <cstdio>
#include <functional>
#include <string>

namespace distill {

// Replaces `path` so that a crash or kill -9 at any moment leaves either the old file or the
// complete new one, never a mix: `writer` fills "<path>.tmp.<pid>" (same directory, so the
// rename cannot cross filesystems), which is flushed, fsynced, renamed over `path`, and then the
// directory is fsynced so the rename itself survives a power loss.
// I/O failures (disk full, permission, missing directory) throw distill::Error naming `path` and
// the OS reason; an exception thrown by `writer` propagates unchanged. Either way the temporary
// file is removed and `path` is untouched. Not for two writers of one path in one process at once
// (they would share the temporary name).
void write_file_atomic(const std::string& path, const std::function<void(std::FILE*)>& writer);
void write_file_atomic(const std::string& path, const void* data, size_t nbytes);
inline void write_file_atomic(const std::string& path, const std::string& text) {
  write_file_atomic(path, text.data(), text.size());
}

// fwrite that throws distill::Error (with the OS reason) on a short write, for use in writers:
// write_file_atomic reports such a failure as an I/O error on its path.
void write_bytes(std::FILE* f, const void* data, size_t nbytes);

// Makes a completed rename/create/unlink inside `dir` durable. "" means the current directory.
void fsync_dir(const std::string& dir);

bool file_exists(const std::string& path);

// The whole file as bytes; throws distill::Error naming the path when it cannot be read.
std::string read_file_text(const std::string& path);

}  // namespace distill

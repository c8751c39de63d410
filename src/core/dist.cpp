#include "core/dist.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <limits>

#include <fmt/format.h>

#include "core/error.h"

#ifdef DISTILL_HAVE_MPI
#define OMPI_SKIP_MPICXX 1  // the C API only
#include <mpi.h>
#endif

namespace distill::dist {

namespace {

int g_rank = 0, g_size = 1;
bool g_mpi = false;  // MPI_Init was called

// All-reduces go in buckets of 2^22 floats (16 MB). OpenMPI 4.1 between two ranks on one machine
// (bench/allreduce_bench.cpp, docs/scaling.md): one 57 MB message took 180-270 ms and 2^26-float
// buckets ran at 0.3 GB/s, where 16 MB buckets run at 4.6-7 GB/s (12 ms for 57 MB, 0.28 s for a
// 0.5B model's 2 GB gradient).
constexpr size_t kBucket = size_t(1) << 22;

bool launched_by_mpi() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"})
    if (std::getenv(var)) return true;
  return false;
}

#ifdef DISTILL_HAVE_MPI

void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw Error("{}: {} failed: {}", where(), what, std::string(text, size_t(len)));
}

template <typename T>
void allreduce(T* data, size_t n, MPI_Datatype type) {
  if (!g_mpi || g_size == 1) return;
  for (size_t begin = 0; begin < n; begin += kBucket) {
    const int count = int(std::min(kBucket, n - begin));
    check(MPI_Allreduce(MPI_IN_PLACE, data + begin, count, type, MPI_SUM, MPI_COMM_WORLD),
          "MPI_Allreduce");
  }
}
#endif

}  // namespace

void init(int* argc, char*** argv) {
#ifdef DISTILL_HAVE_MPI
  if (!launched_by_mpi()) return;
  int provided = 0;
  // Only the main thread calls MPI (the OpenMP workers never do).
  if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
    std::fprintf(stderr, "error: MPI_Init_thread failed\n");
    std::exit(1);
  }
  g_mpi = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  // Errors come back as codes (check() turns them into distill::Error, which ends the job).
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
#else
  (void)argc;
  (void)argv;
  if (launched_by_mpi() && std::getenv("OMPI_COMM_WORLD_RANK") &&
      std::string(std::getenv("OMPI_COMM_WORLD_SIZE")) != "1") {
    std::fprintf(stderr, "error: launched by mpirun, but this distill was built without MPI "
                         "(install libopenmpi-dev and rebuild)\n");
    std::exit(1);
  }
#endif
}

void finalize() {
#ifdef DISTILL_HAVE_MPI
  if (g_mpi) MPI_Finalize();
  g_mpi = false;
#endif
}

int rank() { return g_rank; }
int size() { return g_size; }
bool compiled_with_mpi() {
#ifdef DISTILL_HAVE_MPI
  return true;
#else
  return false;
#endif
}

std::string where() { return g_size > 1 ? fmt::format("rank {}/{}", g_rank, g_size) : ""; }

std::pair<int64_t, int64_t> share(int64_t n) {
  const int64_t base = n / g_size, extra = n % g_size;
  const int64_t begin = g_rank * base + std::min<int64_t>(g_rank, extra);
  return {begin, begin + base + (g_rank < extra ? 1 : 0)};
}

void allreduce_sum(float* data, size_t n) {
#ifdef DISTILL_HAVE_MPI
  allreduce(data, n, MPI_FLOAT);
#else
  (void)data, (void)n;
#endif
}

void allreduce_sum(double* data, size_t n) {
#ifdef DISTILL_HAVE_MPI
  allreduce(data, n, MPI_DOUBLE);
#else
  (void)data, (void)n;
#endif
}

namespace {

// Rank r's part [begin, end) of the bucket [lo, hi).
std::pair<size_t, size_t> part_of(size_t lo, size_t hi, int r) {
  const size_t len = hi - lo, n = size_t(g_size);
  return {lo + len * size_t(r) / n, lo + len * size_t(r + 1) / n};
}

}  // namespace

std::vector<std::pair<size_t, size_t>> shard_ranges(size_t n) {
  std::vector<std::pair<size_t, size_t>> out;
  for (size_t lo = 0; lo < n; lo += kBucket) {
    const auto part = part_of(lo, std::min(n, lo + kBucket), g_rank);
    if (part.second > part.first) out.push_back(part);
  }
  return out;
}

void allgather_shards(float* data, size_t n) {
#ifdef DISTILL_HAVE_MPI
  if (!g_mpi || g_size == 1) return;
  std::vector<int> counts(static_cast<size_t>(g_size)), offsets(static_cast<size_t>(g_size));
  for (size_t lo = 0; lo < n; lo += kBucket) {
    const size_t hi = std::min(n, lo + kBucket);
    for (int r = 0; r < g_size; r++) {
      const auto [b, e] = part_of(lo, hi, r);
      counts[size_t(r)] = int(e - b);
      offsets[size_t(r)] = int(b - lo);
    }
    check(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data + lo, counts.data(),
                         offsets.data(), MPI_FLOAT, MPI_COMM_WORLD),
          "MPI_Allgatherv");
  }
#else
  (void)data, (void)n;
#endif
}

void barrier() {
#ifdef DISTILL_HAVE_MPI
  if (g_mpi && g_size > 1) check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
#endif
}

void broadcast(std::string& bytes, int root) {
#ifdef DISTILL_HAVE_MPI
  if (!g_mpi || g_size == 1) return;
  uint64_t n = bytes.size();
  check(MPI_Bcast(&n, 1, MPI_UINT64_T, root, MPI_COMM_WORLD), "MPI_Bcast");
  if (n > uint64_t(std::numeric_limits<int>::max()))
    throw Error("{}: broadcast of {} bytes is too large", where(), n);
  bytes.resize(size_t(n));
  check(MPI_Bcast(bytes.data(), int(n), MPI_BYTE, root, MPI_COMM_WORLD), "MPI_Bcast");
#else
  (void)bytes, (void)root;
#endif
}

void broadcast(std::vector<int64_t>& values, int root) {
#ifdef DISTILL_HAVE_MPI
  if (!g_mpi || g_size == 1) return;
  std::string bytes;
  if (g_rank == root)
    bytes.assign(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(int64_t));
  broadcast(bytes, root);
  values.resize(bytes.size() / sizeof(int64_t));
  std::memcpy(values.data(), bytes.data(), bytes.size());
#else
  (void)values, (void)root;
#endif
}

std::vector<std::string> gather(const std::string& bytes, int root) {
#ifdef DISTILL_HAVE_MPI
  if (g_mpi && g_size > 1) {
    if (bytes.size() > size_t(std::numeric_limits<int>::max()))
      throw Error("{}: gather of {} bytes is too large", where(), bytes.size());
    const int mine = int(bytes.size());
    std::vector<int> sizes(static_cast<size_t>(g_size)), offsets(static_cast<size_t>(g_size));
    check(MPI_Gather(&mine, 1, MPI_INT, sizes.data(), 1, MPI_INT, root, MPI_COMM_WORLD),
          "MPI_Gather");
    std::string all;
    if (g_rank == root) {
      int64_t total = 0;
      for (int r = 0; r < g_size; r++) {
        offsets[size_t(r)] = int(total);
        total += sizes[size_t(r)];
      }
      if (total > std::numeric_limits<int>::max())
        throw Error("{}: gather of {} bytes is too large", where(), total);
      all.resize(size_t(total));
    }
    check(MPI_Gatherv(bytes.data(), mine, MPI_BYTE, all.data(), sizes.data(), offsets.data(),
                      MPI_BYTE, root, MPI_COMM_WORLD),
          "MPI_Gatherv");
    std::vector<std::string> out;
    if (g_rank == root)
      for (int r = 0; r < g_size; r++)
        out.push_back(all.substr(size_t(offsets[size_t(r)]), size_t(sizes[size_t(r)])));
    return out;
  }
#endif
  (void)root;
  return {bytes};
}

void abort(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
#ifdef DISTILL_HAVE_MPI
  if (g_mpi && g_size > 1) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::exit(code);
}

}  // namespace distill::dist

// scripts/bench mpi: MPI_Allreduce throughput of a gradient-sized float buffer in buckets of
// several sizes, as src/core/dist.cpp reduces gradients (built with mpicxx by scripts/bench).
//
//   mpirun -np 2 build/allreduce_bench FLOATS BUCKET [BUCKET ...]
//
// Prints one JSON line per bucket size: the median of 5 timed rounds after one warm-up.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (argc < 3) {
    if (rank == 0) std::fprintf(stderr, "usage: allreduce_bench FLOATS BUCKET [BUCKET ...]\n");
    MPI_Finalize();
    return 2;
  }
  const size_t n = size_t(std::atoll(argv[1]));
  std::vector<float> data(n, 1.0f);
  for (int a = 2; a < argc; a++) {
    const size_t bucket = size_t(std::atoll(argv[a]));
    std::vector<double> times;
    for (int round = 0; round < 6; round++) {
      MPI_Barrier(MPI_COMM_WORLD);
      const auto t0 = std::chrono::steady_clock::now();
      for (size_t begin = 0; begin < n; begin += bucket)
        MPI_Allreduce(MPI_IN_PLACE, data.data() + begin, int(std::min(bucket, n - begin)),
                      MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (round > 0) times.push_back(s);
    }
    std::sort(times.begin(), times.end());
    const double median = times[times.size() / 2];
    if (rank == 0)
      std::printf("{\"floats\": %zu, \"bucket\": %zu, \"ranks\": %d, \"seconds\": %.6f, "
                  "\"GB_per_s\": %.3f}\n", n, bucket, size, median, double(n) * 4 / median / 1e9);
  }
  MPI_Finalize();
  return 0;
}

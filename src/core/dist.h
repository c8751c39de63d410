// Data parallelism over MPI (OpenMPI, launched with `mpirun -np N build/distill ...`).
//
// The same binary runs with or without MPI: MPI is used when it was found at build time
// (DISTILL_HAVE_MPI) *and* the process was started by an MPI launcher (mpirun sets
// OMPI_COMM_WORLD_SIZE, PMI_SIZE or PMIX_RANK). Otherwise this is one rank of one, every
// collective is a no-op, and nothing of MPI is initialised (a plain `distill train` never pays
// MPI's start-up).
//
// Conventions of the callers (src/train, src/distill):
//   - every rank reads the same inputs and draws the same random numbers; each computes its
//     share of the rows (share()) and the results are summed (allreduce_sum) or gathered to
//     rank 0 (gather);
//   - only rank 0 writes files and prints progress;
//   - an error on any rank ends the whole job (abort()): the other ranks would otherwise wait
//     forever in the next collective.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace distill::dist {

// Call once at the start of main (before threads are made) and finalize() at the end.
void init(int* argc, char*** argv);
void finalize();

int rank();   // 0 when not under MPI
int size();   // 1 when not under MPI
inline bool is_root() { return rank() == 0; }
// "rank 1/2" style prefix for messages, "" for one rank.
std::string where();

// The half-open range [begin, end) of `n` items (rows of a batch) that this rank computes: the
// contiguous split, the first n % size ranks one item longer. May be empty.
std::pair<int64_t, int64_t> share(int64_t n);

// In-place sums over all ranks; every rank gets the same result. Large buffers are reduced in
// buckets of 2^22 elements (dist.cpp says why).
void allreduce_sum(float* data, size_t n);
void allreduce_sum(double* data, size_t n);

// The sharded optimizer step (ZeRO-1's split of the update work): the ranges of a buffer of n
// elements that this rank updates, one per all-reduce bucket (rank r takes the r-th of `size`
// contiguous parts of each bucket); after every rank has updated its ranges,
// allgather_shards(data, n) gives every rank the whole buffer.
std::vector<std::pair<size_t, size_t>> shard_ranges(size_t n);
void allgather_shards(float* data, size_t n);

void barrier();

// Rank root's bytes, on every rank.
void broadcast(std::string& bytes, int root = 0);
void broadcast(std::vector<int64_t>& values, int root = 0);

// Every rank's bytes, in rank order, on root (an empty vector on the other ranks).
std::vector<std::string> gather(const std::string& bytes, int root = 0);

// Ends every rank of the job with `code` (MPI_Abort); a plain exit when not under MPI.
[[noreturn]] void abort(int code);

// Whether this binary was built with MPI.
bool compiled_with_mpi();

}  // namespace distill::dist

// Multi-process data parallelism. Under `mpirun -np N lamina pretrain|sft|dpo ...` the N processes
// (ranks) share each optimizer step: rank r runs micro-batches r, r+N, ...; gradients and the
// step's sums are added across ranks (MPI_Allreduce), so every rank applies the same update and
// the result equals one process running all micro-batches. Rank 0 alone writes metrics,
// checkpoints and progress. Without MPI (or outside mpirun) there is one rank and these are no-ops.
#pragma once
#include <cstddef>

namespace lamina::dist {

// Joins the job when started by mpirun and lamina was built with MPI; call once from main.
void init(int* argc, char*** argv);
void finalize();
// Stops every rank (a failure on one would otherwise leave the others waiting in a reduction).
[[noreturn]] void abort_all(int code);
int rank();
int world();
inline bool is_root() {
  return rank() == 0;
}
bool built_with_mpi();
// In place, summed over all ranks.
void allreduce_sum(float* x, size_t n);
void allreduce_sum(double* x, size_t n);

}  // namespace lamina::dist

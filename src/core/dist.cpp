#include "core/dist.h"

#include <cstdio>
#include <cstdlib>
#include <type_traits>

#ifdef LAMINA_HAVE_MPI
#include <mpi.h>
#endif

namespace lamina::dist {

namespace {
int g_rank = 0, g_world = 1;
[[maybe_unused]] bool g_mpi = false;

// In-place sum over ranks; MPI_Allreduce counts are int, so large buffers go in chunks.
template <class T>
void reduce_sum(T* x, size_t n) {
#ifdef LAMINA_HAVE_MPI
  if (g_world <= 1) return;
  const MPI_Datatype t = std::is_same_v<T, float> ? MPI_FLOAT : MPI_DOUBLE;
  constexpr size_t kChunk = size_t(1) << 28;
  for (size_t i = 0; i < n; i += kChunk) {
    const int c = int(n - i < kChunk ? n - i : kChunk);
    MPI_Allreduce(MPI_IN_PLACE, x + i, c, t, MPI_SUM, MPI_COMM_WORLD);
  }
#else
  (void)x, (void)n;
#endif
}
}  // namespace

bool built_with_mpi() {
#ifdef LAMINA_HAVE_MPI
  return true;
#else
  return false;
#endif
}

void init(int* argc, char*** argv) {
#ifdef LAMINA_HAVE_MPI
  // Only when launched by an MPI starter: a plain `lamina ...` stays a single process.
  if (!std::getenv("OMPI_COMM_WORLD_SIZE") && !std::getenv("PMI_SIZE") && !std::getenv("PMIX_RANK"))
    return;
  MPI_Init(argc, argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_world);
  g_mpi = true;
  // One report per job: rank 0's. Errors (stderr) stay visible from every rank.
  if (g_rank > 0 && !std::freopen("/dev/null", "w", stdout)) std::exit(1);
#else
  (void)argc, (void)argv;
#endif
}

void finalize() {
#ifdef LAMINA_HAVE_MPI
  if (g_mpi) MPI_Finalize();
  g_mpi = false;
#endif
}

void abort_all(int code) {
#ifdef LAMINA_HAVE_MPI
  if (g_mpi && g_world > 1) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::exit(code);
}

int rank() {
  return g_rank;
}
int world() {
  return g_world;
}

void allreduce_sum(float* x, size_t n) {
  reduce_sum(x, n);
}
void allreduce_sum(double* x, size_t n) {
  reduce_sum(x, n);
}

}  // namespace lamina::dist

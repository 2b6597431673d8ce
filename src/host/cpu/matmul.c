/*
 * The CPU backend's matrix product (twin: src/kernels/matmul.cu): cblas_sgemm,
 * single-threaded, on blocks of C split over the OpenMP team (common.h says why).
 */
#include <omp.h>

#include "common.h"

enum { GEMM_ALIGN = 16 };   // block edges on multiples of the sgemm kernel's tile

void cpu_gemm(enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha,
              const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    int split_rows = M >= N, len = split_rows ? M : N;
    #pragma omp parallel
    {
        int team = omp_get_num_threads(), t = omp_get_thread_num();
        int chunk = ((len + team - 1) / team + GEMM_ALIGN - 1) / GEMM_ALIGN * GEMM_ALIGN;
        int lo = t * chunk, n = len - lo < chunk ? len - lo : chunk;
        if (n > 0 && split_rows)     // rows lo.. of op(A) and C
            cblas_sgemm(CblasRowMajor, ta, tb, n, N, K, alpha,
                        A + (ta == CblasNoTrans ? (size_t)lo * lda : (size_t)lo), lda, B, ldb,
                        beta, C + (size_t)lo * ldc, ldc);
        else if (n > 0)              // columns lo.. of op(B) and C
            cblas_sgemm(CblasRowMajor, ta, tb, M, n, K, alpha, A, lda,
                        B + (tb == CblasNoTrans ? (size_t)lo : (size_t)lo * ldb), ldb,
                        beta, C + lo, ldc);
    }
}

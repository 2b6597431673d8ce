/*
 * The CUDA backend: the op table of backend.h on one NVIDIA GPU (Hopper, sm_90).
 * bf16 activations and bf16 weight copy (act_size = wgt_size = 2) into cuBLASLt
 * and the kernels of src/kernels/; fp32 gradients, master weights, moments,
 * LayerNorm statistics, logits and losses. Every op is queued on one stream and
 * none waits for the device except download and sync.
 */
#ifndef MLM_BACKEND_CUDA_H
#define MLM_BACKEND_CUDA_H

#include <stddef.h>

#include "mlm/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Backend on CUDA device `device`; NULL with the reason in err (err_len bytes)
 * when there is no usable GPU (no driver, no device, index out of range, compute
 * capability below 9.0). */
mlm_backend *mlm_backend_cuda(int device, char *err, size_t err_len);

/* Training micro-batches replayed as CUDA graphs (the default; the environment
 * variable MLM_CUDA_GRAPHS=0 turns them off), or every op launched eagerly. */
void mlm_cuda_use_graphs(mlm_backend *be, int on);

/* Attention by the cuBLAS path (GEMMs around a softmax kernel, probabilities
 * saved) instead of the flash kernels: for tests and benchmarks. */
void mlm_cuda_use_cublas_attention(mlm_backend *be, int on);

/* MLM_GEMM_TUNE=1's tally so far: GEMM problems whose algorithm was chosen by
 * timing, and how many of them run another than cuBLASLt's first choice. */
void mlm_cuda_gemm_tuning(mlm_backend *be, int *tuned, int *changed);

#ifdef __cplusplus
}
#endif

#endif

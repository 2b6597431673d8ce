/* tests/emu: the PTX of src/kernels/flash_ptx.cuh (ldmatrix, mma.sync, cp.async and
 * the dynamic shared memory) comes from emu.h, which fake_cuda.h includes. */
#include "../fake_cuda.h"

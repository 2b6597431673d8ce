/* tests/emu: the emulated CUDA runtime, cuBLASLt and CUB (fake_cuda.h). */
#include "../fake_cuda.h"

/*
 * Which OpenBLAS kernels the CPU backend runs (include/mlm/backend.h).
 *
 * OpenBLAS picks its kernels once, when the library loads, from the CPU's family and
 * model numbers. A model newer than the library (Emerald Rapids, model 207, under
 * Debian 12's OpenBLAS 0.3.21, as the build VMs of this project report it) falls back
 * to the "Prescott" SSE3 kernels: sgemm at 20-30 GFLOP/s a core where the AVX-512
 * kernels of the same library run 140. The choice cannot be changed after loading,
 * only through OPENBLAS_CORETYPE before it, so when the library chose a pre-AVX2 core
 * on a CPU whose features (and the OS, per xgetbv) support AVX2 or AVX-512, main()
 * sets OPENBLAS_CORETYPE to the matching kernel set and runs the program again, once.
 * A user's own OPENBLAS_CORETYPE is never touched.
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common.h"
#include "mlm/log.h"

/* Set by the re-run: the core OpenBLAS had chosen, for the log line. */
#define FROM_ENV "MLM_OPENBLAS_DETECTED"

/* 2: AVX2 + FMA kernels or better; 0: older (SSE-era). OpenBLAS's own names. */
static int core_level(const char *name) {
    static const char *const wide[] = {"Haswell", "Zen", "SkylakeX", "Cooperlake",
                                       "SapphireRapids", "Excavator"};
    for (size_t i = 0; i < sizeof wide / sizeof wide[0]; i++)
        if (!strcasecmp(name, wide[i])) return 2;
    return 0;
}

/* The kernel set this CPU's features call for, or NULL when none beats the library's
 * own pick. */
static const char *core_for_features(void) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
    return NULL;
}

const char *mlm_cpu_blas_core_choice(const char *detected) {
    if (core_level(detected) >= 2) return NULL;
    return core_for_features();
}

void mlm_cpu_blas_reexec(char **argv) {
    if (getenv("OPENBLAS_CORETYPE")) return;   // the user's choice, or the re-run itself
    const char *detected = openblas_get_corename();
    const char *want = detected ? mlm_cpu_blas_core_choice(detected) : NULL;
    if (!want) return;
    if (setenv("OPENBLAS_CORETYPE", want, 1) || setenv(FROM_ENV, detected, 1)) return;
    fflush(NULL);
    // the binary's own path, not /proc/self/exe: the process keeps its name (ps, pkill);
    // and only when it is the program argv names (under valgrind, say, it is not)
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len > 0 && (size_t)len < sizeof self - 1) {
        self[len] = 0;
        const char *a = strrchr(argv[0], '/'), *b = strrchr(self, '/');
        if (!strcmp(a ? a + 1 : argv[0], b ? b + 1 : self)) execv(self, argv);
    }
    // no re-run (no /proc, say): carry on with the library's kernels, and say so
    unsetenv("OPENBLAS_CORETYPE");
    unsetenv(FROM_ENV);
    mlm_log("warning: OpenBLAS chose its %s kernels for this CPU, which has %s's; could not "
             "restart with OPENBLAS_CORETYPE=%s (the CPU backend's matmuls run several "
             "times slower: set it yourself)", detected, want, want);
}

const char *mlm_cpu_describe(char *buf, size_t n) {
    const char *core = openblas_get_corename(), *from = getenv(FROM_ENV);
    int threads = omp_get_max_threads();
    if (from && *from)
        snprintf(buf, n, "%d thread%s, OpenBLAS %s kernels (the library's own pick was %s, "
                 "too old for this CPU; OPENBLAS_CORETYPE chooses)", threads, threads == 1 ? "" : "s",
                 core ? core : "?", from);
    else
        snprintf(buf, n, "%d thread%s, OpenBLAS %s kernels", threads, threads == 1 ? "" : "s",
                 core ? core : "?");
    return buf;
}

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
#include <limits.h>
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

/* Whether OpenBLAS's kernel set `name` uses AVX2 + FMA or wider (its own names). */
static int wide_kernels(const char *name) {
    static const char *const wide[] = {"Haswell", "Zen", "SkylakeX", "Cooperlake",
                                       "SapphireRapids", "Excavator"};
    for (size_t i = 0; i < sizeof wide / sizeof wide[0]; i++)
        if (!strcasecmp(name, wide[i])) return 1;
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
    return wide_kernels(detected) ? NULL : core_for_features();
}

/* Whether the program argv[0] names (a path, or a name found on PATH, symlinks
 * followed) is the file self. Under valgrind, say, /proc/self/exe is the tool. */
static int argv0_is(const char *arg0, const char *self) {
    char real[PATH_MAX];
    if (strchr(arg0, '/')) return realpath(arg0, real) && !strcmp(real, self);
    const char *path = getenv("PATH");
    while (path && *path) {
        size_t n = strcspn(path, ":");
        char candidate[PATH_MAX];
        if (n > 0 && (size_t)snprintf(candidate, sizeof candidate, "%.*s/%s", (int)n, path, arg0) < sizeof candidate &&
            access(candidate, X_OK) == 0)
            return realpath(candidate, real) && !strcmp(real, self);   // the first match is what ran
        path += n + (path[n] == ':');
    }
    return 0;
}

void mlm_cpu_blas_reexec(char **argv) {
    if (getenv("OPENBLAS_CORETYPE")) return;   // the user's choice, or the re-run itself
    const char *detected = openblas_get_corename();
    const char *want = detected ? mlm_cpu_blas_core_choice(detected) : NULL;
    if (!want) return;
    fflush(NULL);
    // the binary's own path, not /proc/self/exe: the process keeps its name (ps, pkill);
    // and only when it is the program argv names
    char self[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (argv[0] && len > 0 && (size_t)len < sizeof self - 1) {
        self[len] = 0;
        if (argv0_is(argv[0], self) && !setenv("OPENBLAS_CORETYPE", want, 1) && !setenv(FROM_ENV, detected, 1))
            execv(self, argv);
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

/*
 * A backend that wraps another and tells hooks about every op call: its name, a
 * short shape label ("N=4096 I=768 O=2304 act=1"), and its arguments as 64-bit
 * words, as a device would receive them (pointers, integers, float bits, the
 * dropout fields by value). The ops themselves run on the inner backend.
 *
 * The profiler (profile.h) times ops this way; the tests use it to check that a
 * micro-batch can be replayed (tests/test_replay.c). src/host/backend_ops.c makes
 * the wrapper from the op list.
 */
#ifndef MLM_BACKEND_WRAP_H
#define MLM_BACKEND_WRAP_H

#include <stdint.h>

#include "mlm/backend.h"

enum { MLM_WRAP_MAX_ARGS = 32 };

typedef struct {
    void *ctx;
    /* Before the op runs on the inner backend; flags are its MLM_OP_* of backend.h. */
    void (*before)(void *ctx, const char *op, unsigned flags, const char *shape, const uint64_t *args, int nargs);
    /* After it was queued (or ran, on the CPU). May be NULL. */
    void (*after)(void *ctx, const char *op);
    /* The wrapper's replay (backend.h); NULL: the wrapper has none, so callers run
     * fn directly and every op is seen. */
    void (*replay)(void *ctx, mlm_backend *wrapper, uint64_t key, void (*fn)(void *), void *fn_ctx);
    int rows_align;   // the wrapper's rows_align; 0: the inner backend's
} mlm_wrap_hooks;

/* The wrapper; its destroy destroys the inner backend too. */
mlm_backend *mlm_backend_wrap(mlm_backend *inner, const mlm_wrap_hooks *hooks);

#endif

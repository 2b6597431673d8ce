/*
 * libFuzzer target for the safetensors reader: any bytes must give either a file
 * whose every tensor reads back in bounds, or an error message, never a crash,
 * a leak or an out-of-bounds access (built with AddressSanitizer by run.sh).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mlm/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    void *buf = malloc(size ? size : 1);
    memcpy(buf, data, size);
    mlm_st_file f;
    char err[512];
    if (mlm_st_parse(&f, buf, size, "fuzz", err, sizeof err) != 0) return 0;
    for (int i = 0; i < f.count; i++) {
        const mlm_st_tensor *t = &f.tensors[i];
        if (t->numel > (1u << 20)) continue;
        float *out = malloc((t->numel ? t->numel : 1) * sizeof(float));
        mlm_st_read_f32(&f, t->name, out, t->numel, err, sizeof err);
        free(out);
    }
    mlm_st_close(&f);
    return 0;
}

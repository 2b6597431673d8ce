/*
 * The CUDA backend's replay of training micro-batches as CUDA graphs
 * (backend.cu cuda_replay), on the emulated device (tests/emu/fake_cuda.h),
 * whose stream capture records every launch, copy, memset, cuBLASLt and CUB call
 * and replays the record at cudaGraphLaunch, and which fails a capture that waits
 * or allocates. A tiny model takes micro-batches of three keys (B, S, padded M)
 * with fresh data, step, sequence base and loss scale every time, in an order that
 * makes a key's second call capture, later calls replay, and a larger key grow the
 * scratch buffer (which drops the graphs: they are captured again). After every
 * call the loss statistics and all gradients must equal, bit for bit, those of a
 * second backend that launches every op (mlm_cuda_use_graphs(be, 0)), and graphs
 * must really have been launched. Then the model is destroyed (its buffers freed
 * while graphs hold them) and a new one trained on the same backend.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "mlm/backend.h"
#include "mlm/backend_cuda.h"
#include "mlm/model.h"
#include "../lcg.h"

long emu_graph_launches(void);   // fake_cuda.cpp: cudaGraphLaunch calls so far

static const mlm_model_config cfg = {
    .vocab_size = 101, .hidden_size = 72, .num_layers = 2, .num_heads = 6, .intermediate_size = 144,
    .max_position = 64, .type_vocab_size = 2, .layer_norm_eps = 1e-12f, .hidden_dropout = 0.1f,
    .attention_dropout = 0.1f, .init_range = 0.02f,
};
enum { MAX_B = 4, S = 32, MAX_M = 128 };

static uint64_t rng = 7;

typedef struct {
    int32_t ids[MAX_B * S], lengths[MAX_B], rows[MAX_M], labels[MAX_M];
    mlm_batch b;
} batch;

/* B sequences of random lengths, M distinct masked rows among their tokens. */
static void make_batch(batch *t, int B, int M, uint32_t step, uint32_t seq_base) {
    int tokens = 0;
    for (int b = 0; b < B; b++) {
        t->lengths[b] = b == 0 ? S : 1 + (int32_t)(lcg_next(&rng) % S);
        tokens += t->lengths[b];
    }
    cr_assert(M <= tokens);
    for (int r = 0; r < B * S; r++) t->ids[r] = r % S < t->lengths[r / S] ? 5 + (int32_t)(lcg_next(&rng) % 96) : 0;
    int n = 0;
    while (n < M) {
        int r = (int)(lcg_next(&rng) % (uint32_t)(B * S)), dup = r % S >= t->lengths[r / S];
        for (int i = 0; i < n && !dup; i++) dup = t->rows[i] == r;
        if (dup) continue;
        t->rows[n] = r;
        t->labels[n] = t->ids[r];
        t->ids[r] = 4;   // [MASK]
        n++;
    }
    t->b = (mlm_batch){B, S, M, t->ids, NULL, t->lengths, t->rows, t->labels, seq_base, step};
}

static float params[1 << 20], got[2][1 << 20];

static void train(mlm_backend *be[2], mlm_model m[2], int calls, const int (*shape)[2], int start_step) {
    size_t n = m[0].lay.num_params;
    for (int c = 0; c < calls; c++) {
        batch t;
        make_batch(&t, shape[c][0], shape[c][1], (uint32_t)(start_step + c), (uint32_t)(3 * c));
        float stats[2][4];
        for (int k = 0; k < 2; k++) {
            mlm_model_step_micro(&m[k], &t.b, 1.0f / (float)(shape[c][1] + c));
            be[k]->download(be[k], stats[k], m[k].stats, sizeof stats[k]);
            be[k]->download(be[k], got[k], m[k].grads, n * sizeof(float));
        }
        cr_assert(isfinite(stats[0][0]) && stats[0][0] > 0, "call %d: loss %g", c, stats[0][0]);
        cr_expect(memcmp(stats[0], stats[1], 2 * sizeof(float)) == 0,
                  "call %d (B=%d M=%d): graphs give loss %.9g, hits %g; eager %.9g, %g", c, shape[c][0], shape[c][1],
                  stats[0][0], stats[0][1], stats[1][0], stats[1][1]);
        size_t differ = 0;
        for (size_t i = 0; i < n; i++) differ += memcmp(&got[0][i], &got[1][i], sizeof(float)) != 0;
        cr_expect(differ == 0, "call %d (B=%d M=%d): %zu of %zu gradient elements differ between graphs and eager",
                  c, shape[c][0], shape[c][1], differ, n);
    }
}

Test(cuda_graphs_emu, replay_equals_eager_launches) {
    char err[256];
    mlm_backend *be[2] = {mlm_backend_cuda(0, err, sizeof err), mlm_backend_cuda(0, err, sizeof err)};
    cr_assert(be[0] && be[1], "emulated CUDA backend: %s", err);
    mlm_cuda_use_graphs(be[0], 1);
    mlm_cuda_use_graphs(be[1], 0);
    mlm_layout lay;
    mlm_layout_init(&lay, &cfg);
    cr_assert(lay.num_params <= sizeof params / sizeof params[0]);
    for (size_t i = 0; i < lay.num_params; i++) params[i] = 0.1f * ((float)(lcg_next(&rng) % 2001) / 1000.0f - 1.0f);

    // keys (B, padded M): (4, 64), (4, 128), (2, 64); 6 and 70 masked rows pad to 64 and 128
    static const int shape[][2] = {
        {4, 6}, {4, 6}, {4, 9}, {4, 6},     // eager, capture + launch, launch, launch
        {4, 70},                            // a new key: eager, grows the scratch, drops the graphs
        {4, 6}, {4, 70}, {4, 70}, {4, 6},   // captured again; the new key captured and replayed
        {2, 6}, {2, 5}, {2, 6}, {4, 70},    // a third key
    };
    int calls = (int)(sizeof shape / sizeof shape[0]);
    mlm_model m[2];
    long launches0 = emu_graph_launches();
    for (int round = 0; round < 2; round++) {   // the second model: the backend's buffers freed under its graphs
        for (int k = 0; k < 2; k++) {
            mlm_model_create(&m[k], &cfg, be[k], MAX_B, S, MAX_M, 99);
            mlm_model_set_params(&m[k], params);
        }
        train(be, m, calls, shape, 100 * round);
        for (int k = 0; k < 2; k++) mlm_model_destroy(&m[k]);
    }
    long launches = emu_graph_launches() - launches0;
    cr_expect(launches >= 14, "only %ld graph launches: captures failed or were not tried", launches);
    for (int k = 0; k < 2; k++) be[k]->destroy(be[k]);
}

/*
 * The parameter layout that src/host/train/model.c derives from its spec table: the
 * buffer is tiled by the optimizer's segments, the decayed tensors (matrices and
 * embeddings) first; the HF names cover every element once; the initialisation
 * follows each tensor's kind, on any number of threads.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mlm/config.h"
#include "mlm/model.h"

static mlm_model_config shape(int layers) {
    mlm_config cfg;
    mlm_config_defaults(&cfg);
    cfg.model.vocab_size = 50;
    cfg.model.num_layers = layers;
    cfg.model.hidden_size = 16;
    cfg.model.num_heads = 2;
    cfg.model.intermediate_size = 24;
    cfg.model.max_position = 12;
    return cfg.model;
}

static mlm_layout layout(int layers) {
    mlm_model_config c = shape(layers);
    mlm_layout lay;
    mlm_layout_init(&lay, &c);
    return lay;
}

Test(layout, segments_tile_the_buffer_decayed_first) {
    mlm_layout lay = layout(3);
    mlm_segment seg[128];
    int n = mlm_layout_segments(&lay, seg, 128);
    cr_assert_eq(n, 10 + 12 * 3, "%d segments", n);   // 10 tensors outside the layers, 12 per layer
    size_t at = 0;
    int decayed = 1;
    for (int i = 0; i < n; i++) {
        const mlm_tensor_info *t = &lay.t[seg[i].id];
        cr_expect_eq(seg[i].offset, at, "segment %d (%s layer %d) starts at %zu, not %zu", i, t->name, seg[i].layer,
                     seg[i].offset, at);
        cr_expect_eq(seg[i].count, t->rows * t->cols);
        cr_expect_eq(seg[i].decay, t->cols > 1, "%s: weight decay on matrices and embeddings only", t->name);
        cr_expect(decayed || !seg[i].decay, "%s is decayed after an undecayed tensor", t->name);
        decayed = seg[i].decay;
        at += seg[i].count;
    }
    cr_expect_eq(at, lay.num_params);
    cr_expect_eq(lay.t[MLM_T_QKV_W].rows, 3 * 16u, "qkv_w is the three HF parts");
    cr_expect_eq(lay.t[MLM_T_QKV_W].part, MLM_PART_LAYER);
    cr_expect_eq(lay.t[MLM_T_DEC_B].part, MLM_PART_HEAD);
    cr_expect_eq(lay.t[MLM_T_WTE].part, MLM_PART_EMBEDDINGS);
}

Test(layout, hf_names_cover_every_element_once) {
    mlm_layout lay = layout(2);
    mlm_hf_tensor hf[128];
    int n = mlm_hf_tensors(&lay, hf, 128);
    cr_assert_eq(n, 10 + 16 * 2, "%d HF tensors", n);
    unsigned char *seen = calloc(lay.num_params, 1);
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < i; j++) cr_expect_str_neq(hf[i].name, hf[j].name);
        cr_expect_null(strchr(hf[i].name, '%'), "%s", hf[i].name);
        size_t count = hf[i].rows * (hf[i].cols ? hf[i].cols : 1);
        for (size_t e = hf[i].offset; e < hf[i].offset + count; e++) {
            cr_assert_lt(e, lay.num_params, "%s", hf[i].name);
            cr_expect_eq(seen[e]++, 0, "element %zu twice (%s)", e, hf[i].name);
        }
    }
    for (size_t e = 0; e < lay.num_params; e++) cr_expect_eq(seen[e], 1, "element %zu in no HF tensor", e);
    free(seen);
    // the key of layer 1 is the second row block of its qkv_w
    for (int i = 0; i < n; i++)
        if (!strcmp(hf[i].name, "bert.encoder.layer.1.attention.self.key.weight"))
            cr_expect_eq(hf[i].offset, mlm_offset(&lay, MLM_T_QKV_W, 1) + 16 * 16);
}

Test(layout, initialisation_by_kind) {
    mlm_backend *be = mlm_backend_cpu(1);
    mlm_model m;
    mlm_model_config c = shape(2);
    mlm_model_create(&m, &c, be, 1, 8, 8, 5);
    mlm_model_init_params(&m, 5);
    const float *p = m.master;   // host memory on the CPU backend
    for (int id = 0; id < MLM_T_COUNT; id++) {
        const mlm_tensor_info *t = &m.lay.t[id];
        double sum = 0, sq = 0;
        for (size_t i = 0; i < t->numel; i++) sum += p[t->offset + i], sq += p[t->offset + i] * p[t->offset + i];
        if (t->init == MLM_INIT_ONE || t->init == MLM_INIT_ZERO) {
            cr_expect_eq(sum, t->init == MLM_INIT_ONE ? (double)t->numel : 0.0, "%s", t->name);
            cr_expect_eq(sq, sum, "%s: all %g", t->name, t->init == MLM_INIT_ONE ? 1.0 : 0.0);
        } else {
            cr_expect_eq(t->cols > 1, 1, "%s: a normal vector", t->name);
            double sd = sqrt(sq / t->numel);
            cr_expect(sd > 0.015 && sd < 0.025, "%s: sd %g, init_range 0.02", t->name, sd);
        }
    }
    const float *wte = p + m.lay.t[MLM_T_WTE].offset;
    for (int k = 0; k < 16; k++) cr_expect_eq(wte[k], 0.0f, "the [PAD] row of the word embeddings is zero");
    cr_expect_neq(wte[16], 0.0f);
    cr_expect_eq(m.lay.t[MLM_T_LN1_W].init, MLM_INIT_ONE);
    mlm_model_destroy(&m);
    be->destroy(be);
}

/* position_init = sinusoidal: the position table holds range sqrt2 sin / cos of
 * position x 10000^(-2i/d), and nothing else changes (RoBERTa: positions from row 2,
 * its pad row 1 zero). */
Test(layout, sinusoidal_positions) {
    for (int roberta = 0; roberta < 2; roberta++) {
        float *values[2];
        size_t n = 0, wpe = 0, rows = 0, d = 0;
        for (int k = 0; k < 2; k++) {
            mlm_backend *be = mlm_backend_cpu(1);
            mlm_model m;
            mlm_model_config c = shape(2);
            c.architecture = roberta ? MLM_ARCH_ROBERTA : MLM_ARCH_BERT;
            c.position_init = k ? MLM_POSITION_INIT_SINUSOIDAL : MLM_POSITION_INIT_NORMAL;
            mlm_model_create(&m, &c, be, 1, 8, 8, 5);
            mlm_model_init_params(&m, 5);
            n = m.lay.num_params;
            wpe = m.lay.t[MLM_T_WPE].offset, rows = m.lay.t[MLM_T_WPE].rows, d = m.lay.t[MLM_T_WPE].cols;
            values[k] = malloc(n * sizeof(float));
            memcpy(values[k], m.master, n * sizeof(float));
            mlm_model_destroy(&m);
            be->destroy(be);
        }
        size_t first = roberta ? 2 : 0;
        cr_expect_eq(memcmp(values[0], values[1], wpe * sizeof(float)), 0, "a tensor before the positions changed");
        cr_expect_eq(memcmp(values[0] + wpe + rows * d, values[1] + wpe + rows * d, (n - wpe - rows * d) * sizeof(float)),
                     0, "a tensor after the positions changed");
        const float *p = values[1] + wpe;
        for (size_t r = first; r < rows; r++)
            for (size_t c = 0; c < d; c++) {
                double w = pow(10000.0, -(double)(c / 2 * 2) / (double)d), k = (double)(r - first);
                double want = 0.02 * sqrt(2.0) * (c % 2 ? cos(k * w) : sin(k * w));
                cr_expect_float_eq(p[r * d + c], want, 1e-6, "position %zu, column %zu", r, c);
            }
        if (roberta)
            for (size_t c = 0; c < d; c++) cr_expect_eq(p[1 * d + c], 0.0f, "RoBERTa's pad row must stay zero");
        free(values[0]);
        free(values[1]);
    }
}

/* The initialisation runs on the OpenMP team; its values do not depend on its size. */
Test(layout, initialisation_is_the_same_on_any_thread_count) {
    mlm_model_config c = shape(2);
    float *values[2];
    size_t n = 0;
    for (int k = 0; k < 2; k++) {
        mlm_backend *be = mlm_backend_cpu(k == 0 ? 1 : 3);
        mlm_model m;
        mlm_model_create(&m, &c, be, 1, 8, 8, 5);
        mlm_model_init_params(&m, 11);
        n = m.lay.num_params;
        values[k] = malloc(n * sizeof(float));
        memcpy(values[k], m.master, n * sizeof(float));
        mlm_model_destroy(&m);
        be->destroy(be);
    }
    cr_expect_eq(memcmp(values[0], values[1], n * sizeof(float)), 0, "1 and 3 threads initialise differently");
    free(values[0]);
    free(values[1]);
}

/*
 * The CPU backend against HF transformers BertForMaskedLM and RobertaForMaskedLM:
 * one batch's logits at the masked positions, the loss, every parameter gradient,
 * and the losses of ten AdamW steps with clipping. Fixtures:
 * tests/fixtures/hf_tiny.safetensors (BERT) and hf_tiny_roberta.safetensors
 * (RoBERTa: positions from padding_idx + 1, <pad> = 1), made by
 * tests/reference/make_fixtures.py.
 */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mlm/backend.h"
#include "mlm/model.h"
#include "mlm/optimizer.h"
#include "mlm/safetensors.h"

#define FIXTURE MLM_SOURCE_ROOT "/tests/fixtures/hf_tiny.safetensors"
#define ROBERTA_FIXTURE MLM_SOURCE_ROOT "/tests/fixtures/hf_tiny_roberta.safetensors"
#define MAX_HF 512

typedef struct {
    mlm_st_file f;
    mlm_model_config cfg;
    mlm_backend *be;
    mlm_model model;
    mlm_hf_tensor names[MAX_HF];
    int nnames;
    float *init;              // host fp32 parameters (num_params)
    int B, S, M;
    int32_t *ids, *lengths, *rows, *labels;
    mlm_batch batch;
} parity;

static int json_int(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    cr_assert(cJSON_IsNumber(v), "config.%s missing", k);
    return v->valueint;
}

static void read_config(parity *p) {
    const char *meta = p->f.metadata_json;
    cr_assert_not_null(meta, "fixture has no metadata");
    cJSON *m = cJSON_Parse(meta), *c = cJSON_GetObjectItemCaseSensitive(m, "config");
    cr_assert(cJSON_IsString(c), "fixture metadata has no config");
    cJSON *j = cJSON_Parse(c->valuestring);
    cr_assert_not_null(j);
    mlm_model_config *g = &p->cfg;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "model_type");
    g->architecture = cJSON_IsString(type) && !strcmp(type->valuestring, "roberta") ? MLM_ARCH_ROBERTA : MLM_ARCH_BERT;
    g->vocab_size = json_int(j, "vocab_size");
    g->hidden_size = json_int(j, "hidden_size");
    g->num_layers = json_int(j, "num_hidden_layers");
    g->num_heads = json_int(j, "num_attention_heads");
    g->intermediate_size = json_int(j, "intermediate_size");
    g->max_position = json_int(j, "max_position_embeddings");
    g->type_vocab_size = json_int(j, "type_vocab_size");
    g->layer_norm_eps = (float)cJSON_GetObjectItemCaseSensitive(j, "layer_norm_eps")->valuedouble;
    g->init_range = 0.02f;
    cJSON_Delete(j);
    cJSON_Delete(m);
}

static int32_t *read_i32(parity *p, const char *name, size_t n) {
    int32_t *out = malloc(n * sizeof(int32_t));
    char err[512];
    cr_assert_eq(mlm_st_read_i32(&p->f, name, out, n, err, sizeof err), 0, "%s", err);
    return out;
}

static void setup(parity *p, const char *fixture) {
    memset(p, 0, sizeof *p);
    char err[1024];
    cr_assert_eq(mlm_st_open(&p->f, fixture, err, sizeof err), 0, "%s", err);
    read_config(p);
    const mlm_st_tensor *ids = mlm_st_find(&p->f, "batch.ids"), *rows = mlm_st_find(&p->f, "batch.rows");
    cr_assert(ids && rows && ids->ndim == 2);
    p->B = (int)ids->shape[0];
    p->S = (int)ids->shape[1];
    p->M = (int)rows->numel;
    p->ids = read_i32(p, "batch.ids", (size_t)p->B * p->S);
    p->lengths = read_i32(p, "batch.lengths", p->B);
    p->rows = read_i32(p, "batch.rows", p->M);
    p->labels = read_i32(p, "batch.labels", p->M);
    p->batch = (mlm_batch){p->B, p->S, p->M, p->ids, NULL, p->lengths, p->rows, p->labels, 0, 1};
    p->be = mlm_backend_cpu(2);
    mlm_model_create(&p->model, &p->cfg, p->be, p->B, p->S, p->M, 0);
    p->nnames = mlm_hf_tensors(&p->model.lay, p->names, MAX_HF);
    cr_assert_leq(p->nnames, MAX_HF);
    p->init = calloc(p->model.lay.num_params, sizeof(float));
    for (int i = 0; i < p->nnames; i++) {
        const mlm_hf_tensor *t = &p->names[i];
        size_t n = t->rows * (t->cols ? t->cols : 1);
        cr_assert_eq(mlm_st_read_f32(&p->f, t->name, p->init + t->offset, n, err, sizeof err), 0, "%s", err);
    }
    mlm_model_set_params(&p->model, p->init);
}

static void teardown(parity *p) {
    mlm_model_destroy(&p->model);
    p->be->destroy(p->be);
    mlm_st_close(&p->f);
    free(p->init);
    free(p->ids);
    free(p->lengths);
    free(p->rows);
    free(p->labels);
}

/* Loss sum and correct count left in the model's statistics; clears them. */
static float take_loss(parity *p) {
    float s[4];
    p->be->download(p->be, s, p->model.stats, sizeof s);
    p->be->zero(p->be, p->model.stats, sizeof s);
    return s[0] / (float)p->M;
}

static float *read_ref(parity *p, const char *name, size_t n) {
    float *out = malloc(n * sizeof(float));
    char err[512];
    cr_assert_eq(mlm_st_read_f32(&p->f, name, out, n, err, sizeof err), 0, "%s", err);
    return out;
}

static void logits_and_loss(const char *fixture) {
    parity p;
    setup(&p, fixture);
    size_t n = (size_t)p.M * p.cfg.vocab_size;
    float *logits = malloc(n * sizeof(float)), *ref = read_ref(&p, "ref.logits", n);
    mlm_model_forward(&p.model, &p.batch, logits);
    float loss = take_loss(&p), ref_loss = *read_ref(&p, "ref.loss", 1);
    double max_err = 0;
    for (size_t i = 0; i < n; i++) max_err = fmax(max_err, fabs(logits[i] - ref[i]));
    cr_expect_lt(max_err, 1e-4, "logits max abs error %g", max_err);
    cr_expect_lt(fabs(loss - ref_loss) / ref_loss, 1e-5, "loss %.8f, HF %.8f", loss, ref_loss);
    free(logits);
    free(ref);
    teardown(&p);
}

static void every_gradient(const char *fixture) {
    parity p;
    setup(&p, fixture);
    mlm_model_step_micro(&p.model, &p.batch, 1.0f / (float)p.M);
    float loss = take_loss(&p), ref_loss = *read_ref(&p, "ref.loss", 1);
    cr_expect_lt(fabs(loss - ref_loss) / ref_loss, 1e-5, "training loss %.8f, HF %.8f", loss, ref_loss);
    size_t np = p.model.lay.num_params;
    float *g = malloc(np * sizeof(float));
    p.be->download(p.be, g, p.model.grads, np * sizeof(float));
    double diff[MAX_HF], norm[MAX_HF], total = 0;
    for (int i = 0; i < p.nnames; i++) {
        const mlm_hf_tensor *t = &p.names[i];
        size_t n = t->rows * (t->cols ? t->cols : 1);
        char name[128];
        snprintf(name, sizeof name, "grad.%s", t->name);
        float *ref = read_ref(&p, name, n);
        diff[i] = norm[i] = 0;
        for (size_t k = 0; k < n; k++) {
            double e = g[t->offset + k] - ref[k];
            diff[i] += e * e;
            norm[i] += (double)ref[k] * ref[k];
        }
        total += norm[i];
        free(ref);
    }
    for (int i = 0; i < p.nnames; i++) {
        const char *name = p.names[i].name;
        if (strstr(name, "self.key.bias")) {
            // softmax ignores a shift shared by a query's scores: this gradient is zero in
            // exact arithmetic, and both sides hold only rounding noise
            cr_expect_lt(sqrt(diff[i] / total), 1e-6, "%s: %g, not zero", name, sqrt(diff[i] / total));
            continue;
        }
        cr_expect_gt(norm[i], 1e-12 * total, "%s: reference gradient is zero", name);
        cr_expect_lt(sqrt(diff[i] / norm[i]), 1e-4, "%s: relative error %g", name, sqrt(diff[i] / norm[i]));
    }
    free(g);
    teardown(&p);
}

static void ten_adamw_steps(const char *fixture) {
    parity p;
    setup(&p, fixture);
    mlm_optim_config o = {.lr = 1e-3f, .warmup_steps = 0, .schedule = MLM_SCHED_CONSTANT, .weight_decay = 0.01f,
                          .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-6f, .grad_clip = 1.0f};
    float *ref = read_ref(&p, "ref.adamw_losses", 10);
    for (int step = 1; step <= 10; step++) {
        mlm_model_step_micro(&p.model, &p.batch, 1.0f / (float)p.M);
        float loss = take_loss(&p);
        cr_expect_lt(fabs(loss - ref[step - 1]), 1e-4, "step %d: loss %.7f, HF %.7f", step, loss, ref[step - 1]);
        mlm_optim_step(&p.model, &o, step, mlm_lr_at(&o, step, 10));
    }
    cr_expect_lt(ref[9], ref[0] - 0.01, "the reference loss should fall over ten steps");
    free(ref);
    teardown(&p);
}

Test(hf_parity, logits_and_loss) { logits_and_loss(FIXTURE); }
Test(hf_parity, every_gradient) { every_gradient(FIXTURE); }
Test(hf_parity, ten_adamw_steps) { ten_adamw_steps(FIXTURE); }

Test(hf_parity, roberta_logits_and_loss) { logits_and_loss(ROBERTA_FIXTURE); }
Test(hf_parity, roberta_every_gradient) { every_gradient(ROBERTA_FIXTURE); }
Test(hf_parity, roberta_ten_adamw_steps) { ten_adamw_steps(ROBERTA_FIXTURE); }

/*
 * Checkpoints end to end: the directory HF loads (and a round trip through
 * transformers when it is installed), bit-identical resume, a writer killed
 * mid-checkpoint, SIGTERM, resume mismatches, import of HF checkpoints (current and
 * legacy names) against HF's logits, and corrupt files.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "mlm/checkpoint.h"
#include "mlm/data.h"
#include "mlm/fileio.h"
#include "mlm/safetensors.h"

static char out[1 << 16];

/* A small model on the sample text; constant lr so a run's length does not change
 * the schedule. */
static const char *SMALL =
    "[model]\nhidden_size = 32\nnum_layers = 2\nnum_heads = 2\nintermediate_size = 64\nmax_position = 128\n"
    "[data]\ntrain = " SAMPLE "/train.shard\nval = " SAMPLE "/val.shard\nvocab = " SAMPLE "/vocab.txt\n"
    "[train]\nmicro_batch = 4\nbatch = 8\nsteps = 20\nlog_every = 1\neval_steps = 1\nthreads = 2\n"
    "checkpoint_keep = 2\nout_dir = run\n"
    "[optim]\nlr = 1e-3\nwarmup_steps = 0\nschedule = constant\n";

static int train(const char *env, const char *extra) {
    char args[2048];
    snprintf(args, sizeof args, "train --config small.ini --device cpu %s", extra);
    return run_mlmgpu(env, args, out, sizeof out);
}

TestSuite(checkpoint, .init = make_tmpdir, .fini = rm_tmpdir, .timeout = 240);

Test(checkpoint, directory_loads_in_transformers) {
    write_file("small.ini", SMALL);
    cr_assert_eq(train("", "--set train.steps=3"), 0, "%s", out);
    const char *files[] = {"model.safetensors", "config.json", "vocab.txt", "tokenizer_config.json",
                           "special_tokens_map.json", "optimizer.safetensors", "trainer_state.json", "mlmgpu.ini"};
    for (int i = 0; i < 8; i++) {
        char p[256];
        snprintf(p, sizeof p, "%s/run/checkpoints/latest/%s", tmpdir, files[i]);
        cr_expect_eq(access(p, R_OK), 0, "missing %s", files[i]);
    }
    char model[256], err[1024];
    tmp_path(model, sizeof model, "run/checkpoints/step_0000003/model.safetensors");
    mlm_st_file f;
    cr_assert_eq(mlm_st_open(&f, model, err, sizeof err), 0, "%s", err);
    cr_expect(f.metadata_json && strstr(f.metadata_json, "\"format\":\"pt\""), "%s", f.metadata_json);
    const mlm_st_tensor *q = mlm_st_find(&f, "bert.encoder.layer.1.attention.self.query.weight");
    cr_assert_not_null(q);
    cr_expect(q->ndim == 2 && q->shape[0] == 32 && q->shape[1] == 32 && q->dtype == MLM_ST_F32);
    cr_expect_not_null(mlm_st_find(&f, "cls.predictions.bias"));
    mlm_st_close(&f);
    // transformers scores the batch mlmgpu scored, to 1e-4 (skipped without transformers)
    int rc = run_mlmgpu("", "eval --model run/checkpoints/latest --data " SAMPLE "/val.shard --steps 1 "
                        "--micro-batch 4 --device cpu --dump batch.st", out, sizeof out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "loss ") && strstr(out, "ppl "), "%s", out);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cd %s && python3 %s/tests/reference/hf_roundtrip.py run/checkpoints/latest batch.st "
             "> roundtrip.log 2>&1", tmpdir, MLM_SOURCE_ROOT);
    int py = system(cmd);
    py = WIFEXITED(py) ? WEXITSTATUS(py) : -1;
    if (py == 77 || py == 127) cr_skip_test("transformers is not installed: pip install torch transformers");
    cr_expect_eq(py, 0, "HF round trip failed (see roundtrip.log)");
}

Test(checkpoint, resume_is_bit_identical) {
    write_file("small.ini", SMALL);
    cr_assert_eq(train("", "--set train.out_dir=full"), 0, "%s", out);
    cr_assert_eq(train("", "--set train.out_dir=split --set train.steps=10"), 0, "%s", out);
    cr_assert_eq(train("", "--set train.out_dir=split --resume auto"), 0, "%s", out);
    cr_expect(strstr(out, "resumed from split/checkpoints/latest at step 10"), "%s", out);
    double a[32], b[32];
    int na = read_metric_losses("full", "train", a, 32), nb = read_metric_losses("split", "train", b, 32);
    cr_assert_eq(na, 20);
    cr_assert_eq(nb, 20);
    for (int i = 0; i < 20; i++) cr_expect_eq(a[i], b[i], "step %d: %.6f vs %.6f", i + 1, a[i], b[i]);
    cr_expect(same_tmp_files("full/checkpoints/step_0000020/model.safetensors",
                        "split/checkpoints/step_0000020/model.safetensors"), "weights differ");
    cr_expect(same_tmp_files("full/checkpoints/step_0000020/optimizer.safetensors",
                        "split/checkpoints/step_0000020/optimizer.safetensors"), "AdamW moments differ");
    // checkpoint_keep = 2: step 10 and 20 remain in split
    char p[256];
    tmp_path(p, sizeof p, "split/checkpoints/step_0000010");
    cr_expect_eq(access(p, F_OK), 0);
}

Test(checkpoint, killed_writer_leaves_the_previous_checkpoint) {
    write_file("small.ini", SMALL);
    cr_assert_eq(train("", "--set train.out_dir=full --set train.steps=4"), 0, "%s", out);
    // checkpoint at step 2 completes (5 fault points), the one at step 4 dies after 2 files
    int rc = train("MLM_FAULT_CHECKPOINT=7", "--set train.steps=4 --set train.checkpoint_every=2");
    cr_assert_eq(rc, 128 + 9, "exit %d: %s", rc, out);
    char link[256], target[64] = "";
    tmp_path(link, sizeof link, "run/checkpoints/latest");
    cr_assert_gt(readlink(link, target, sizeof target - 1), 0);
    cr_expect_str_eq(target, "step_0000002");
    char p[256];
    tmp_path(p, sizeof p, "run/checkpoints/step_0000004");
    cr_expect_neq(access(p, F_OK), 0, "a half-written checkpoint is visible");
    cr_assert_eq(train("", "--set train.steps=4 --set train.checkpoint_every=2 --resume auto"), 0, "%s", out);
    cr_expect(same_tmp_files("full/checkpoints/step_0000004/model.safetensors",
                        "run/checkpoints/step_0000004/model.safetensors"), "resumed run differs");
}

Test(checkpoint, sigterm_finishes_the_step_and_checkpoints) {
    write_file("small.ini", SMALL);
    // --foreground: one SIGTERM, to mlmgpu only; without it timeout also signals its
    // process group, and the second TERM (by design) ends the run without a checkpoint
    int rc = run_mlmgpu("timeout --foreground --preserve-status -s TERM 3", "train --config small.ini --device cpu --set train.steps=1000000",
                        out, sizeof out);
    cr_assert_eq(rc, 128 + 15, "exit %d (a stopped run is not a finished one): %s", rc, out);
    cr_expect(strstr(out, "signal received: the step finishes, a checkpoint is written"), "%s", out);
    const char *at = strstr(out, "terminated at step ");
    cr_assert_not_null(at, "%s", out);
    char name[64], p[256];
    snprintf(name, sizeof name, "run/checkpoints/step_%07d/model.safetensors", atoi(at + 19));
    tmp_path(p, sizeof p, name);
    cr_expect_eq(access(p, R_OK), 0, "no checkpoint %s", name);
}

Test(checkpoint, resume_mismatches_fail_clearly) {
    write_file("small.ini", SMALL);
    cr_assert_eq(train("", "--set train.steps=2"), 0, "%s", out);
    cr_expect_eq(train("", "--set model.hidden_size=64 --resume auto"), 2);
    cr_expect(strstr(out, "hidden_size = 32 but the config says 64"), "%s", out);
    write_file("v.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n");
    cr_expect_eq(train("", "--set data.vocab=v.txt --resume auto"), 2);
    cr_expect(strstr(out, "another vocabulary"), "%s", out);
    // shards that do not say their vocabulary (hash 0): the checkpoint's own record
    // of it refuses a changed data.vocab
    char shard[256], err[512];
    int32_t ids[8 * 128];
    for (int i = 0; i < 8 * 128; i++) ids[i] = 1000 + (i * 37) % 5000;
    tmp_path(shard, sizeof shard, "h0.shard");
    cr_assert_eq(mlm_shard_write(shard, ids, 8, 128, 2, 0, err, sizeof err), 0, "%s", err);
    char *vocab = read_path(SAMPLE "/vocab.txt", NULL);
    write_file("v2.txt", vocab);
    const char *h0 = "--set data.train=h0.shard --set data.val= --set data.vocab=v2.txt --set train.out_dir=run2";
    char args[512];
    snprintf(args, sizeof args, "%s --set train.steps=1 --set train.checkpoint_every=1", h0);
    cr_assert_eq(train("", args), 0, "%s", out);
    char *token = strstr(vocab, "\n[unused5]\n");   // the same size, one token renamed
    cr_assert(token);
    token[8] = 'Z';
    write_file("v2.txt", vocab);
    free(vocab);
    snprintf(args, sizeof args, "%s --set train.steps=2 --resume auto", h0);
    cr_expect_eq(train("", args), 2, "%s", out);
    cr_expect(strstr(out, "trained with another vocabulary (hash ") && strstr(out, "than data.vocab v2.txt"), "%s", out);
    cr_expect_eq(train("", "--resume nowhere"), 2);
    cr_expect(strstr(out, "--resume nowhere: not a checkpoint directory"), "%s", out);
    // a corrupt checkpoint is named, not loaded
    char p[256];
    tmp_path(p, sizeof p, "run/checkpoints/step_0000002/model.safetensors");
    cr_assert_eq(truncate(p, 1000), 0);
    cr_expect_eq(train("", "--resume auto"), 2);
    cr_expect(strstr(out, "model.safetensors"), "%s", out);
}

/* ---- import of HF checkpoints, checked against HF's own logits ---- */

#define FIXTURE MLM_SOURCE_ROOT "/tests/fixtures/hf_tiny.safetensors"

/* Rewrites the fixture's weights as an HF directory; legacy = old LayerNorm names,
 * no "bert." prefix, plus a pooler and an NSP head that must be ignored. */
static void make_hf_dir(const char *dir, int legacy) {
    char err[1024], path[256];
    mlm_st_file f;
    cr_assert_eq(mlm_st_open(&f, FIXTURE, err, sizeof err), 0, "%s", err);
    mlm_st_out *o = calloc(f.count + 2, sizeof *o);
    char **names = calloc(f.count + 2, sizeof *names);
    int n = 0;
    for (int i = 0; i < f.count; i++) {
        const mlm_st_tensor *t = &f.tensors[i];
        if (!strncmp(t->name, "batch.", 6) || !strncmp(t->name, "ref.", 4) || !strncmp(t->name, "grad.", 5)) continue;
        char name[160];
        snprintf(name, sizeof name, "%s", legacy && !strncmp(t->name, "bert.", 5) ? t->name + 5 : t->name);
        char *ln = legacy ? strstr(name, "LayerNorm.") : NULL;
        if (ln) strcpy(ln + 10, !strcmp(ln + 10, "weight") ? "gamma" : "beta");
        names[n] = strdup(name);
        o[n] = (mlm_st_out){names[n], t->dtype, t->ndim, {0}, t->data};
        memcpy(o[n].shape, t->shape, sizeof t->shape);
        n++;
    }
    static float pooler[32 * 32], nsp[2 * 32];
    if (legacy) {
        o[n++] = (mlm_st_out){"pooler.dense.weight", MLM_ST_F32, 2, {32, 32}, pooler};
        o[n++] = (mlm_st_out){"cls.seq_relationship.weight", MLM_ST_F32, 2, {2, 32}, nsp};
    }
    tmp_path(path, sizeof path, dir);
    cr_assert_eq(mlm_mkdir_p(path), 0);
    snprintf(path + strlen(path), sizeof path - strlen(path), "/model.safetensors");
    cr_assert_eq(mlm_st_write(path, o, n, NULL, NULL, 0, err, sizeof err), 0, "%s", err);
    char cfg[1200];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    // the fixture's own config, as HF wrote it
    const char *meta = strstr(f.metadata_json, "\"config\":\"");
    cr_assert_not_null(meta);
    char json[1024];
    size_t k = 0;
    for (const char *c = meta + 10; *c && !(*c == '"' && c[-1] != '\\') && k + 1 < sizeof json; c++)
        if (*c != '\\') json[k++] = *c;
    json[k] = 0;
    write_file(cfg, json);
    for (int i = 0; i < n; i++)
        if (i < f.count) free(names[i]);
    free(names);
    free(o);
    mlm_st_close(&f);
}

#define ROBERTA_FIXTURE MLM_SOURCE_ROOT "/tests/fixtures/hf_tiny_roberta.safetensors"
#define ROBERTA_DIR MLM_SOURCE_ROOT "/tests/fixtures/hf_tiny_roberta_model"
#define BERT_DIR MLM_SOURCE_ROOT "/tests/fixtures/hf_tiny_model"

/* dir: a path, absolute or under tmpdir, holding the model of fixture, an
 * architecture model. */
static void expect_arch_logits(const char *dir, const char *fixture, mlm_arch arch) {
    char err[1024], path[256];
    mlm_st_file f;
    cr_assert_eq(mlm_st_open(&f, fixture, err, sizeof err), 0, "%s", err);
    const mlm_st_tensor *ids = mlm_st_find(&f, "batch.ids"), *rows = mlm_st_find(&f, "batch.rows");
    int B = (int)ids->shape[0], S = (int)ids->shape[1], M = (int)rows->numel;
    int32_t *id = malloc(B * S * 4), *len = malloc(B * 4), *row = malloc(M * 4), *lab = malloc(M * 4);
    mlm_st_read_i32(&f, "batch.ids", id, B * S, err, sizeof err);
    mlm_st_read_i32(&f, "batch.lengths", len, B, err, sizeof err);
    mlm_st_read_i32(&f, "batch.rows", row, M, err, sizeof err);
    mlm_st_read_i32(&f, "batch.labels", lab, M, err, sizeof err);
    mlm_model_config base = {0};
    base.init_range = 0.02f;
    base.architecture = arch;
    mlm_backend *be = mlm_backend_cpu(2);
    mlm_model m;
    if (dir[0] == '/') snprintf(path, sizeof path, "%s", dir);
    else tmp_path(path, sizeof path, dir);
    cr_assert_eq(mlm_model_load_dir(&m, path, &base, be, B, S, M, 1, err, sizeof err), 0, "%s", err);
    int V = m.lay.cfg.vocab_size;
    float *logits = malloc((size_t)M * V * 4), *ref = malloc((size_t)M * V * 4);
    mlm_batch b = {B, S, M, id, NULL, len, row, lab, 0, 1};
    mlm_model_forward(&m, &b, logits);
    mlm_st_read_f32(&f, "ref.logits", ref, (size_t)M * V, err, sizeof err);
    double worst = 0;
    for (size_t i = 0; i < (size_t)M * V; i++) worst = fmax(worst, fabs(logits[i] - ref[i]));
    cr_expect_lt(worst, 1e-4, "%s: logits max abs error %g", dir, worst);
    mlm_model_destroy(&m);
    be->destroy(be);
    free(logits), free(ref), free(id), free(len), free(row), free(lab);
    mlm_st_close(&f);
}

static void expect_hf_logits(const char *dir) { expect_arch_logits(dir, FIXTURE, MLM_ARCH_BERT); }

TestSuite(import, .init = make_tmpdir, .fini = rm_tmpdir);

Test(import, save_pretrained_directory_matches_hf_logits) {
    expect_hf_logits(MLM_SOURCE_ROOT "/tests/fixtures/hf_tiny_model");
}

Test(import, hf_names_match_hf_logits) {
    make_hf_dir("hf", 0);
    expect_hf_logits("hf");
}

Test(import, legacy_names_match_hf_logits) {
    make_hf_dir("legacy", 1);
    expect_hf_logits("legacy");
}

Test(import, init_from_trains) {
    make_hf_dir("hf", 0);
    write_file("imp.ini", "[model]\ninit_from = hf\n"
               "[data]\ntrain = " SAMPLE "/train.shard\nseq_len = 32\n"
               "[train]\nmicro_batch = 2\nbatch = 2\nsteps = 2\nlog_every = 1\nout_dir = run\n");
    char path[256];
    tmp_path(path, sizeof path, "seq32.shard");
    // the tiny fixture model has 128 ids and 40 positions: shards of ids < 128, 32 long
    int32_t ids[4 * 32];
    for (int i = 0; i < 4 * 32; i++) ids[i] = 5 + (i * 7) % 120;
    char err[512];
    cr_assert_eq(mlm_shard_write(path, ids, 4, 32, 2, 0, err, sizeof err), 0, "%s", err);
    int rc = run_mlmgpu("", "train --config imp.ini --device cpu --set data.train=seq32.shard", out, sizeof out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "imported from hf") && strstr(out, "2 layers, hidden 32"), "%s", out);
}

Test(import, bad_directories_are_named) {
    make_hf_dir("hf", 0);
    char err[1024], path[256];
    mlm_model_config base = {0};
    mlm_backend *be = mlm_backend_cpu(1);
    mlm_model m;
    tmp_path(path, sizeof path, "nowhere");
    cr_expect_eq(mlm_model_load_dir(&m, path, &base, be, 1, 8, 8, 1, err, sizeof err), -1);
    cr_expect(strstr(err, "config.json: cannot open"), "%s", err);
    // config.json that lies about the shape: a tensor has the wrong size
    write_file("hf/config.json", "{\"vocab_size\": 128, \"hidden_size\": 64, \"num_hidden_layers\": 2,"
               "\"num_attention_heads\": 4, \"intermediate_size\": 64, \"max_position_embeddings\": 40,"
               "\"type_vocab_size\": 2, \"layer_norm_eps\": 1e-12}");
    tmp_path(path, sizeof path, "hf");
    cr_expect_eq(mlm_model_load_dir(&m, path, &base, be, 1, 8, 8, 1, err, sizeof err), -1);
    cr_expect(strstr(err, "word_embeddings.weight has 4096 elements"), "%s", err);
    write_file("hf/config.json", "{\"vocab_size\": 128}");
    cr_expect_eq(mlm_model_load_dir(&m, path, &base, be, 1, 8, 8, 1, err, sizeof err), -1);
    cr_expect(strstr(err, "hidden_size is missing"), "%s", err);
    write_file("hf/config.json", "[1, 2]");
    cr_expect_eq(mlm_model_load_dir(&m, path, &base, be, 1, 8, 8, 1, err, sizeof err), -1);
    cr_expect(strstr(err, "not a JSON object"), "%s", err);
    be->destroy(be);
}

/* A RobertaForMaskedLM directory as save_pretrained wrote it: roberta. / lm_head.
 * names, positions from 2; its logits are HF's. */
Test(import, roberta_directory_matches_hf_logits) {
    expect_arch_logits(ROBERTA_DIR, ROBERTA_FIXTURE, MLM_ARCH_ROBERTA);
    mlm_model_config mc = {0};
    char err[1024];
    cr_assert_eq(mlm_hf_read_config(ROBERTA_DIR, &mc, err, sizeof err), 0, "%s", err);
    cr_expect_eq(mc.architecture, MLM_ARCH_ROBERTA);
    cr_expect_eq(mc.type_vocab_size, 1);
    cr_expect_eq(mc.max_position, 40);
}

/* Copies a file of the source tree into tmpdir/dir/name. */
static void copy_in(const char *from, const char *dir, const char *name) {
    char path[256];
    size_t n;
    char *text = read_path(from, &n);
    tmp_path(path, sizeof path, dir);
    cr_assert_eq(mlm_mkdir_p(path), 0);
    snprintf(path + strlen(path), sizeof path - strlen(path), "/%s", name);
    FILE *f = fopen(path, "wb");
    cr_assert(f && fwrite(text, 1, n, f) == n);
    fclose(f);
    free(text);
}

/* Loading dir (tmpdir/dir unless it is absolute) as c, S tokens a sequence, is
 * refused, and the error holds want. */
static void expect_refused(mlm_backend *be, const char *dir, const mlm_model_config *c, int S, const char *want) {
    char path[256], err[1024];
    if (dir[0] == '/') snprintf(path, sizeof path, "%s", dir);
    else tmp_path(path, sizeof path, dir);
    mlm_model m;
    cr_expect_eq(mlm_model_load_dir(&m, path, c, be, 1, S, 8, 1, err, sizeof err), -1, "%s loaded", path);
    cr_expect(strstr(err, want), "%s: %s", path, err);
}

/* An architecture that does not match the directory, either way, and a config.json
 * that names one family over the other's tensors: named, nothing loaded. */
Test(import, architecture_mismatches_are_named) {
    char err[1024];
    mlm_backend *be = mlm_backend_cpu(1);
    mlm_model m;
    mlm_model_config bert = {.architecture = MLM_ARCH_BERT, .init_range = 0.02f}, roberta = bert;
    roberta.architecture = MLM_ARCH_ROBERTA;
    expect_refused(be, ROBERTA_DIR, &bert, 8,
                   "config.json: a RoBERTa model (model_type \"roberta\"), but model.architecture is bert");
    expect_refused(be, BERT_DIR, &roberta, 8,
                   "config.json: a BERT model (model_type \"bert\"), but model.architecture is roberta");
    // RoBERTa's config.json over BERT's tensors, and the other way round
    copy_in(ROBERTA_DIR "/config.json", "mixed", "config.json");
    copy_in(BERT_DIR "/model.safetensors", "mixed", "model.safetensors");
    expect_refused(be, "mixed", &roberta, 8,
                   "model.safetensors: holds BERT tensors (bert.embeddings.word_embeddings.weight) but "
                   "config.json names a roberta model");
    copy_in(BERT_DIR "/config.json", "mixed2", "config.json");
    copy_in(ROBERTA_DIR "/model.safetensors", "mixed2", "model.safetensors");
    expect_refused(be, "mixed2", &bert, 8,
                   "holds RoBERTa tensors (roberta.embeddings.word_embeddings.weight) but config.json names "
                   "a bert model");
    // model_type and architectures that disagree; a model type mlmgpu does not have
    write_file("mixed/config.json", "{\"model_type\": \"bert\", \"architectures\": [\"RobertaForMaskedLM\"], "
               "\"vocab_size\": 128}");
    expect_refused(be, "mixed2", &bert, 8, "holds RoBERTa tensors");   // mixed2 is untouched by that
    expect_refused(be, "mixed", &bert, 8, "model_type \"bert\" but architectures [\"RobertaForMaskedLM\"]");
    write_file("mixed/config.json", "{\"model_type\": \"gpt2\", \"vocab_size\": 128}");
    expect_refused(be, "mixed", &bert, 8, "model_type \"gpt2\": mlmgpu implements \"bert\" and \"roberta\"");
    // RoBERTa numbers positions from 2: 40 rows hold 38 tokens
    expect_refused(be, ROBERTA_DIR, &roberta, 39, "max_position_embeddings 40 is shorter than seq_len 39 + 2");
    cr_assert_eq(mlm_model_load_dir(&m, ROBERTA_DIR, &roberta, be, 1, 38, 8, 1, err, sizeof err), 0, "%s", err);
    mlm_model_destroy(&m);
    be->destroy(be);
}

/* A RoBERTa model's checkpoint (roberta. / lm_head. names, RobertaConfig, the BPE
 * vocabulary's vocab.json + merges.txt and a RobertaTokenizer config) loads with
 * AutoModelForMaskedLM and AutoTokenizer as RobertaForMaskedLM and
 * RobertaTokenizerFast, and HF's logits and loss on a batch are ours to 1e-4
 * (tests/reference/hf_roundtrip.py; skipped without transformers). */
Test(checkpoint, roberta_checkpoint_loads_in_transformers) {
    mlm_config cfg;
    mlm_config_defaults(&cfg);
    cfg.model = (mlm_model_config){.architecture = MLM_ARCH_ROBERTA, .vocab_size = 300, .hidden_size = 32,
                                   .num_layers = 2, .num_heads = 4, .intermediate_size = 64, .max_position = 34,
                                   .type_vocab_size = 1, .layer_norm_eps = 1e-5f, .init_range = 0.2f};
    snprintf(cfg.data.vocab, sizeof cfg.data.vocab, "%s", MLM_SOURCE_ROOT "/tests/fixtures/roberta_bpe");
    cfg.data.seq_len = 32;
    tmp_path(cfg.train.out_dir, sizeof cfg.train.out_dir, "run");
    enum { B = 2, S = 32, M = 6 };
    // <s> words </s> <pad>...; <mask> = 4
    int32_t ids[B * S], lengths[B] = {32, 20}, rows[M] = {1, 7, 30, 32 + 3, 32 + 10, 32 + 18}, labels[M];
    for (int r = 0; r < B * S; r++) {
        int s = r % S, n = lengths[r / S];
        ids[r] = s >= n ? 1 : s == 0 ? 0 : s == n - 1 ? 2 : 5 + (r * 37) % 295;
    }
    for (int i = 0; i < M; i++) labels[i] = ids[rows[i]], ids[rows[i]] = 4;
    mlm_backend *be = mlm_backend_cpu(2);
    mlm_model m;
    mlm_model_create(&m, &cfg.model, be, B, S, M, 5);
    mlm_model_init_params(&m, 5);
    float logits[M * 300], stats[3];
    mlm_batch b = {B, S, M, ids, NULL, lengths, rows, labels, 0, 1};
    mlm_model_forward(&m, &b, logits);
    mlm_model_take_stats(&m, stats);
    float loss = stats[0] / M;
    char err[1024];
    uint64_t vhash = mlm_vocab_hash(cfg.data.vocab, err, sizeof err);
    cr_assert_neq(vhash, 0, "%s", err);
    cr_assert_eq(mlm_checkpoint_save(&m, &cfg, vhash, 1, err, sizeof err), 0, "%s", err);
    mlm_model_destroy(&m);
    be->destroy(be);
    const char *files[] = {"model.safetensors", "config.json", "vocab.json", "merges.txt", "tokenizer_config.json",
                           "special_tokens_map.json", "optimizer.safetensors", "trainer_state.json", "mlmgpu.ini"};
    for (int i = 0; i < 9; i++) {
        char p[256];
        snprintf(p, sizeof p, "%s/run/checkpoints/latest/%s", tmpdir, files[i]);
        cr_expect_eq(access(p, R_OK), 0, "missing %s", files[i]);
    }
    char path[256];
    tmp_path(path, sizeof path, "run/checkpoints/latest/model.safetensors");
    mlm_st_file f;
    cr_assert_eq(mlm_st_open(&f, path, err, sizeof err), 0, "%s", err);
    cr_expect_not_null(mlm_st_find(&f, "roberta.encoder.layer.1.attention.self.query.weight"));
    cr_expect_not_null(mlm_st_find(&f, "lm_head.layer_norm.weight"));
    cr_expect_not_null(mlm_st_find(&f, "lm_head.bias"));
    cr_expect_null(mlm_st_find(&f, "bert.embeddings.word_embeddings.weight"));
    mlm_st_close(&f);
    mlm_st_out dump[6] = {
        {"batch.ids", MLM_ST_I32, 2, {B, S}, ids},       {"batch.lengths", MLM_ST_I32, 1, {B}, lengths},
        {"batch.rows", MLM_ST_I32, 1, {M}, rows},        {"batch.labels", MLM_ST_I32, 1, {M}, labels},
        {"loss", MLM_ST_F32, 1, {1}, &loss},             {"logits", MLM_ST_F32, 2, {M, 300}, logits},
    };
    tmp_path(path, sizeof path, "batch.st");
    cr_assert_eq(mlm_st_write(path, dump, 6, NULL, NULL, 0, err, sizeof err), 0, "%s", err);
    // mlmgpu reads its own checkpoint back: config.json names roberta, the weights match
    mlm_model_config mc = {0};
    tmp_path(path, sizeof path, "run/checkpoints/latest");
    cr_assert_eq(mlm_hf_read_config(path, &mc, err, sizeof err), 0, "%s", err);
    cr_expect_eq(mc.architecture, MLM_ARCH_ROBERTA);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cd %s && python3 %s/tests/reference/hf_roundtrip.py run/checkpoints/latest batch.st "
             "> roundtrip.log 2>&1", tmpdir, MLM_SOURCE_ROOT);
    int py = system(cmd);
    py = WIFEXITED(py) ? WEXITSTATUS(py) : -1;
    if (py == 77 || py == 127) cr_skip_test("transformers is not installed: pip install torch transformers");
    char log[256], *text;
    size_t n;
    tmp_path(log, sizeof log, "roundtrip.log");
    cr_assert_eq(mlm_read_file(log, &text, &n, err, sizeof err), 0, "%s", err);
    cr_expect_eq(py, 0, "HF round trip failed: %s", text);
    free(text);
}

/* ---- fill-mask and eval on a trained checkpoint ---- */

#define TEXTS "\"the perl [MASK] is a language.\" \"use [MASK] to print [MASK] lines.\""

Test(checkpoint, fill_mask_matches_the_hf_pipeline) {
    write_file("small.ini", SMALL);
    cr_assert_eq(train("", "--set train.steps=30"), 0, "%s", out);
    int rc = run_mlmgpu("", "fill-mask --model run/checkpoints/latest --top-k 5 --device cpu " TEXTS " > fill.txt",
                        out, sizeof out);
    cr_assert_eq(rc, 0, "%s", out);
    char *text = read_tmp("fill.txt", NULL);
    int masks = 0;
    for (char *p = text; (p = strstr(p, " [MASK] #")); p++) masks++;
    cr_expect_eq(masks, 3, "%s", text);
    free(text);
    cr_expect_eq(run_mlmgpu("", "fill-mask --model run/checkpoints/latest --device cpu \"no mask here\"", out,
                            sizeof out), 2);
    cr_expect(strstr(out, "no [MASK] in the text"), "%s", out);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cd %s && python3 %s/tests/reference/hf_fill_mask.py run/checkpoints/latest 5 fill.txt "
             TEXTS " > hf.log 2>&1", tmpdir, MLM_SOURCE_ROOT);
    int py = system(cmd);
    py = WIFEXITED(py) ? WEXITSTATUS(py) : -1;
    if (py == 77 || py == 127) cr_skip_test("transformers is not installed: pip install torch transformers");
    cr_expect_eq(py, 0, "fill-mask differs from the HF pipeline (see hf.log)");
}

/* ---- RoBERTa end to end: prepare, train, eval, HF, fill-mask, resume, init_from ---- */

/* A tiny RoBERTa model on the vocab_corpus text, tokenized with the fixture BPE
 * vocabulary (300 tokens) into 64-token sequences padded with <pad> = 1. */
static const char *ROBERTA_SMALL = ROBERTA_TINY_MODEL_AND_DATA
    "[train]\nmicro_batch = 4\nbatch = 8\nsteps = 6\nlog_every = 1\neval_steps = 1\nthreads = 2\n"
    "checkpoint_keep = 2\nout_dir = rrun\n"
    "[optim]\nlr = 1e-3\nwarmup_steps = 0\nschedule = constant\n";

static int roberta_train(const char *extra) {
    char args[2048];
    snprintf(args, sizeof args, "train --config rsmall.ini --device cpu %s", extra);
    return run_mlmgpu("", args, out, sizeof out);
}

/* Runs a reference script in tmpdir; 77 (no transformers) skips the test. */
static void expect_python(const char *script_and_args, const char *what) {
    char cmd[2048], log[256], *text = NULL, err[512];
    size_t n;
    snprintf(cmd, sizeof cmd, "cd %s && python3 %s/tests/reference/%s > py.log 2>&1", tmpdir, MLM_SOURCE_ROOT,
             script_and_args);
    int py = system(cmd);
    py = WIFEXITED(py) ? WEXITSTATUS(py) : -1;
    if (py == 77 || py == 127) cr_skip_test("transformers is not installed: pip install torch transformers");
    tmp_path(log, sizeof log, "py.log");
    mlm_read_file(log, &text, &n, err, sizeof err);
    cr_expect_eq(py, 0, "%s: %s", what, text ? text : err);
    free(text);
}

#define ROBERTA_TEXTS "\"the perl <mask> is a language.\" \"use <mask> to print<mask> lines.\""

Test(checkpoint, roberta_trains_evaluates_fills_and_resumes) {
    write_file("rsmall.ini", ROBERTA_SMALL);
    prepare_roberta_data();   // blank-line documents, the default (what --paragraphs asked for)
    int rc;
    // straight through, and stopped at step 3 then resumed: the same losses and weights
    cr_assert_eq(roberta_train("--set train.out_dir=full"), 0, "%s", out);
    cr_assert_eq(roberta_train("--set train.steps=3"), 0, "%s", out);
    cr_assert_eq(roberta_train("--resume auto"), 0, "%s", out);
    cr_expect(strstr(out, "resumed from rrun/checkpoints/latest at step 3"), "%s", out);
    double a[8], b[8];
    cr_assert_eq(read_metric_losses("full", "train", a, 8), 6);
    cr_assert_eq(read_metric_losses("rrun", "train", b, 8), 6);
    for (int i = 0; i < 6; i++) cr_expect_eq(a[i], b[i], "step %d: %.6f vs %.6f", i + 1, a[i], b[i]);
    cr_expect(same_tmp_files("full/checkpoints/step_0000006/model.safetensors",
                        "rrun/checkpoints/step_0000006/model.safetensors"), "resumed weights differ");
    // a resume as another architecture is refused before any work
    cr_expect_eq(roberta_train("--resume auto --set train.steps=8 --set model.architecture=bert"), 2, "%s", out);
    cr_expect(strstr(out, "architecture"), "%s", out);
    // eval, and transformers scores the same batch (AutoModelForMaskedLM, AutoTokenizer)
    rc = run_mlmgpu("", "eval --model rrun/checkpoints/latest --data rdata/val --steps 1 --micro-batch 4 "
                    "--device cpu --dump batch.st", out, sizeof out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "loss ") && strstr(out, "ppl "), "%s", out);
    expect_python("hf_roundtrip.py rrun/checkpoints/latest batch.st", "HF round trip of the RoBERTa checkpoint");
    // fill-mask with <mask>, as HF's pipeline
    rc = run_mlmgpu("", "fill-mask --model rrun/checkpoints/latest --top-k 5 --device cpu " ROBERTA_TEXTS
                    " > fill.txt", out, sizeof out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_expect_eq(run_mlmgpu("", "fill-mask --model rrun/checkpoints/latest --device cpu \"a [MASK] here\"", out,
                            sizeof out), 2);
    cr_expect(strstr(out, "no <mask> in the text"), "%s", out);
    expect_python("hf_fill_mask.py rrun/checkpoints/latest 5 fill.txt " ROBERTA_TEXTS, "fill-mask against HF");
}

/* init_from takes a RobertaForMaskedLM directory into a roberta config, and refuses
 * one of the other architecture, either way, before any work. */
Test(import, roberta_init_from) {
    char path[256], err[512];
    int32_t ids[4 * 32];
    for (int i = 0; i < 4 * 32; i++) ids[i] = i % 32 == 0 ? 0 : i % 32 == 31 ? 2 : 5 + (i * 7) % 120;
    tmp_path(path, sizeof path, "r32.shard");
    cr_assert_eq(mlm_shard_write_padded(path, ids, 4, 32, 2, 0, MLM_ROBERTA_PAD_ID, err, sizeof err), 0, "%s", err);
    write_file("rimp.ini", "[model]\narchitecture = roberta\ninit_from = " ROBERTA_DIR "\n"
               "[data]\ntrain = r32.shard\nseq_len = 32\n"
               "[train]\nmicro_batch = 2\nbatch = 2\nsteps = 2\nlog_every = 1\nout_dir = run\n");
    int rc = run_mlmgpu("", "train --config rimp.ini --device cpu", out, sizeof out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "imported from") && strstr(out, "2 layers, hidden 32"), "%s", out);
    rc = run_mlmgpu("", "train --config rimp.ini --device cpu --set train.out_dir=run2 --set model.init_from=" BERT_DIR,
                    out, sizeof out);
    cr_expect_eq(rc, 2, "%s", out);
    cr_expect(strstr(out, "a BERT model (model_type \"bert\"), but model.architecture is roberta"), "%s", out);
    tmp_path(path, sizeof path, "seq32.shard");
    for (int i = 0; i < 4 * 32; i++) ids[i] = 5 + (i * 7) % 120;
    cr_assert_eq(mlm_shard_write(path, ids, 4, 32, 2, 0, err, sizeof err), 0, "%s", err);
    rc = run_mlmgpu("", "train --config rimp.ini --device cpu --set train.out_dir=run3 --set model.architecture=bert "
                    "--set data.train=seq32.shard", out, sizeof out);
    cr_expect_eq(rc, 2, "%s", out);
    cr_expect(strstr(out, "a RoBERTa model (model_type \"roberta\"), but model.architecture is bert"), "%s", out);
}

/*
 * The path to fine-tuning (docs/FINETUNE.md): a checkpoint mlmgpu trains, BERT and
 * RoBERTa, loads in transformers as ...ForSequenceClassification,
 * ...ForTokenClassification and ...ForQuestionAnswering with only the task head
 * newly initialised and every encoder weight equal to the checkpoint's
 * (tests/reference/hf_finetune_heads.py). A checkpoint with one encoder weight
 * taken out must fail that check. Skipped where Python lacks torch or transformers.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "mlm/fileio.h"
#include "mlm/safetensors.h"

static char out[1 << 16];

/* A small BERT on the sample shards; a few steps move every weight off its init. */
static const char *BERT_SMALL =
    "[model]\nhidden_size = 32\nnum_layers = 2\nnum_heads = 2\nintermediate_size = 64\nmax_position = 128\n"
    "[data]\ntrain = " SAMPLE "/train.shard\nval = " SAMPLE "/val.shard\nvocab = " SAMPLE "/vocab.txt\n"
    "[train]\nmicro_batch = 4\nbatch = 8\nsteps = 3\nlog_every = 1\neval_steps = 1\nthreads = 2\nout_dir = run\n"
    "[optim]\nlr = 1e-3\nwarmup_steps = 0\nschedule = constant\n";

/* The same shapes as RoBERTa, on the fixture BPE vocabulary (300 tokens). */
static const char *ROBERTA_SMALL = ROBERTA_TINY_MODEL_AND_DATA
    "[train]\nmicro_batch = 4\nbatch = 8\nsteps = 3\nlog_every = 1\neval_steps = 1\nthreads = 2\nout_dir = rrun\n"
    "[optim]\nlr = 1e-3\nwarmup_steps = 0\nschedule = constant\n";

/* Runs the reference check on checkpoints in tmpdir (one Python start: torch and
 * transformers take seconds to import); its exit code, output in out. Skips the test
 * where Python lacks them (exit 77, or no python3). */
static int check_heads(const char *ckpts) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cd %s && python3 %s/tests/reference/hf_finetune_heads.py %s", tmpdir,
             MLM_SOURCE_ROOT, ckpts);
    int rc = run_shell(cmd, out, sizeof out);
    if (rc == 77 || rc == 127)
        cr_skip_test("python3 lacks torch, transformers or safetensors: pip install torch transformers safetensors");
    return rc;
}

TestSuite(finetune, .init = make_tmpdir, .fini = rm_tmpdir, .timeout = 300);

Test(finetune, bert_checkpoint_loads_for_three_tasks) {
    write_file("small.ini", BERT_SMALL);
    int rc = run_mlmgpu("", "train --config small.ini --device cpu", out, sizeof out);
    cr_assert_eq(rc, 0, "%s", out);
    // and a copy less one encoder weight, which the check must catch
    const char *drop = "bert.encoder.layer.1.output.dense.bias";
    char cmd[512];
    snprintf(cmd, sizeof cmd, "mkdir %s/broken && cd %s/run/checkpoints/latest && cp config.json vocab.txt "
             "tokenizer_config.json special_tokens_map.json %s/broken/", tmpdir, tmpdir, tmpdir);
    cr_assert_eq(run_shell(cmd, out, sizeof out), 0, "%s", out);
    char src[256], dst[256], err[512];
    tmp_path(src, sizeof src, "run/checkpoints/latest/model.safetensors");
    tmp_path(dst, sizeof dst, "broken/model.safetensors");
    mlm_st_file f;
    cr_assert_eq(mlm_st_open(&f, src, err, sizeof err), 0, "%s", err);
    mlm_st_out *o = calloc(f.count, sizeof *o);
    int n = 0;
    for (int i = 0; i < f.count; i++) {
        const mlm_st_tensor *t = &f.tensors[i];
        if (!strcmp(t->name, drop)) continue;
        o[n] = (mlm_st_out){t->name, t->dtype, t->ndim, {0}, t->data};
        memcpy(o[n].shape, t->shape, sizeof t->shape);
        n++;
    }
    cr_assert_eq(n, f.count - 1, "%s is not in the checkpoint", drop);
    const char *key[] = {"format"}, *value[] = {"pt"};
    cr_assert_eq(mlm_st_write(dst, o, n, key, value, 1, err, sizeof err), 0, "%s", err);
    free(o);
    mlm_st_close(&f);
    rc = check_heads("run/checkpoints/latest broken");
    cr_expect_eq(rc, 1, "%s", out);   // broken fails
    cr_expect(strstr(out, "run/checkpoints/latest: ok"), "%s", out);
    cr_expect(strstr(out, "latest: BertForSequenceClassification: new ['bert.pooler.dense.bias', "
                          "'bert.pooler.dense.weight', 'classifier.bias', 'classifier.weight']"), "%s", out);
    cr_expect(strstr(out, "latest: BertForTokenClassification: new ['classifier.bias', 'classifier.weight']"), "%s", out);
    cr_expect(strstr(out, "latest: BertForQuestionAnswering: new ['qa_outputs.bias', 'qa_outputs.weight']"), "%s", out);
    const char *caught = strstr(out, "FAIL broken: BertForSequenceClassification: newly initialised");
    cr_expect(caught && strstr(caught, drop), "a checkpoint without %s passed: %s", drop, out);
    cr_expect(!strstr(out, "broken: ok"), "%s", out);
}

Test(finetune, roberta_checkpoint_loads_for_three_tasks) {
    write_file("rsmall.ini", ROBERTA_SMALL);
    prepare_roberta_data();
    int rc = run_mlmgpu("", "train --config rsmall.ini --device cpu", out, sizeof out);
    cr_assert_eq(rc, 0, "%s", out);
    rc = check_heads("rrun/checkpoints/latest");
    cr_expect_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "rrun/checkpoints/latest: ok"), "%s", out);
    cr_expect(strstr(out, "RobertaForSequenceClassification: new ['classifier.dense.bias', "
                          "'classifier.dense.weight', 'classifier.out_proj.bias', 'classifier.out_proj.weight']"),
              "%s", out);
    cr_expect(strstr(out, "RobertaForTokenClassification: new ['classifier.bias', 'classifier.weight']"), "%s", out);
    cr_expect(strstr(out, "RobertaForQuestionAnswering: new ['qa_outputs.bias', 'qa_outputs.weight']"), "%s", out);
}

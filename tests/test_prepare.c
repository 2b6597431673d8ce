/*
 * mlmgpu prepare: packing (FULL-SENTENCES with [SEP] between documents, padding
 * only at the end), the split by document, determinism across thread counts,
 * blank-line documents by default (--file-documents: a file is one), every bad
 * input named, and the unigram baseline the trainer prints from the shards.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "mlm/data.h"
#include "mlm/eval.h"
#include "mlm/fileio.h"
#include "mlm/prepare.h"

/* ids: [PAD]0 [UNK]1 [CLS]2 [SEP]3 [MASK]4, then words */
static const char *VOCAB = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nalpha\nbeta\ngamma\ndelta\n.\n";

static char out[1 << 14];

static mlm_prepare_opts opts(const char **inputs, int n, int seq_len, const char *outdir) {
    static char vocab[256];
    tmp_path(vocab, sizeof vocab, "vocab.txt");
    static char outp[256];
    tmp_path(outp, sizeof outp, outdir);
    return (mlm_prepare_opts){inputs, n, vocab, 0, seq_len, outp, 0.0, 2, 0, 4, 0, 0};
}

/* All sequences of dir/split as one array; returns how many. */
static int read_split(const char *dir, const char *split, int S, int32_t *seqs, int max) {
    char path[256], err[512];
    snprintf(path, sizeof path, "%s/%s/%s", tmpdir, dir, split);
    mlm_shards sh;
    if (mlm_shards_open(&sh, path, S, 0, err, sizeof err) != 0) return 0;
    int n = (int)sh.total;
    cr_assert_leq(n, max);
    for (int i = 0; i < n; i++) cr_assert_geq(mlm_shards_get(&sh, i, seqs + i * S, 10, err, sizeof err), 0, "%s", err);
    mlm_shards_close(&sh);
    return n;
}

TestSuite(prepare, .init = make_tmpdir, .fini = rm_tmpdir);

Test(prepare, packs_documents_with_sep_between) {
    write_file("vocab.txt", VOCAB);
    write_file("a.txt", "alpha beta gamma");          // 5 6 7
    write_file("b.txt", "Delta. alpha");              // 8 9 5
    char a[256], b[256];
    tmp_path(a, sizeof a, "a.txt");
    tmp_path(b, sizeof b, "b.txt");
    const char *in[] = {a, b};
    mlm_prepare_opts o = opts(in, 2, 5, "out");
    mlm_prepare_stats st;
    char err[1024];
    cr_assert_eq(mlm_prepare(&o, &st, err, sizeof err), 0, "%s", err);
    // stream: 5 6 7 [SEP] 8 9 5 -> [CLS] 5 6 7 [SEP] | [CLS] 8 9 5 [SEP] (a boundary [SEP] at a start is dropped)
    int32_t seqs[64], want[] = {2, 5, 6, 7, 3, 2, 8, 9, 5, 3};
    int n = read_split("out", "train", 5, seqs, 12);
    cr_assert_eq(n, 2);
    for (int i = 0; i < 10; i++) cr_expect_eq(seqs[i], want[i], "position %d: %d", i, seqs[i]);
    cr_expect_eq(st.train.docs, 2);
    cr_expect_eq(st.train.tokens, 6);
    // a document boundary inside a sequence; the tail is padded after its [SEP]
    o = opts(in, 2, 7, "out7");
    cr_assert_eq(mlm_prepare(&o, &st, err, sizeof err), 0, "%s", err);
    int32_t want7[] = {2, 5, 6, 7, 3, 8, 3, 2, 9, 5, 3, 0, 0, 0};
    n = read_split("out7", "train", 7, seqs, 12);
    cr_assert_eq(n, 2);
    for (int i = 0; i < 14; i++) cr_expect_eq(seqs[i], want7[i], "position %d: %d", i, seqs[i]);
    // a boundary that would fill the last slot ends the sequence instead: no [SEP][SEP]
    o = opts(in, 2, 6, "out6");
    cr_assert_eq(mlm_prepare(&o, &st, err, sizeof err), 0, "%s", err);
    int32_t want6[] = {2, 5, 6, 7, 3, 0, 2, 8, 9, 5, 3, 0};
    n = read_split("out6", "train", 6, seqs, 12);
    cr_assert_eq(n, 2);
    for (int i = 0; i < 12; i++) cr_expect_eq(seqs[i], want6[i], "position %d: %d", i, seqs[i]);
    char manifest[256];
    tmp_path(manifest, sizeof manifest, "out/manifest.json");
    cr_expect_eq(access(manifest, R_OK), 0);
}

/* 24 one-word documents: the split is by document and does not depend on threads. */
static void write_docs(void) {
    write_file("vocab.txt", VOCAB);
    const char *words[] = {"alpha", "beta", "gamma", "delta"};
    char name[64], text[256];
    run_shell("true", out, sizeof out);
    for (int i = 0; i < 24; i++) {
        snprintf(name, sizeof name, "docs/%02d.txt", i);
        snprintf(text, sizeof text, "%s %s %s .", words[i % 4], words[(i / 4) % 4], words[(i / 16) % 4]);
        char dir[256];
        tmp_path(dir, sizeof dir, "docs");
        mlm_mkdir_p(dir);
        write_file(name, text);
    }
}

Test(prepare, split_by_document_and_deterministic) {
    write_docs();
    char docs[256], err[1024];
    tmp_path(docs, sizeof docs, "docs");
    const char *in[] = {docs};
    mlm_prepare_stats st1, st2;
    mlm_prepare_opts o = opts(in, 1, 8, "one");
    o.val_fraction = 0.3;
    o.threads = 1;
    cr_assert_eq(mlm_prepare(&o, &st1, err, sizeof err), 0, "%s", err);
    o = opts(in, 1, 8, "two");
    o.val_fraction = 0.3;
    o.threads = 3;
    cr_assert_eq(mlm_prepare(&o, &st2, err, sizeof err), 0, "%s", err);
    cr_expect_eq(st1.train.docs + st1.val.docs, 24);
    cr_expect(st1.val.docs >= 3 && st1.val.docs <= 14, "val documents %llu", (unsigned long long)st1.val.docs);
    cr_expect_eq(st1.train.tokens + st1.val.tokens, 24 * 4);
    const char *files[] = {"train/train-00000.shard", "val/val-00000.shard", "vocab.txt"};
    for (int i = 0; i < 3; i++) {
        char one[128], two[128];
        snprintf(one, sizeof one, "one/%s", files[i]);
        snprintf(two, sizeof two, "two/%s", files[i]);
        cr_expect(same_tmp_files(one, two), "%s differs between 1 and 3 threads", files[i]);
    }
}

Test(prepare, split_is_the_same_wherever_the_corpus_lives) {
    write_docs();
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cd %s && mkdir -p elsewhere/deeper && cp -r docs elsewhere/deeper/corpus", tmpdir);
    cr_assert_eq(run_shell(cmd, out, sizeof out), 0, "%s", out);
    char a[256], b[256], err[1024];
    tmp_path(a, sizeof a, "docs");
    tmp_path(b, sizeof b, "elsewhere/deeper/corpus/");   // a trailing slash changes nothing either
    const char *ina[] = {a}, *inb[] = {b};
    mlm_prepare_stats st;
    mlm_prepare_opts o = opts(ina, 1, 8, "one");
    o.val_fraction = 0.3;
    cr_assert_eq(mlm_prepare(&o, &st, err, sizeof err), 0, "%s", err);
    o = opts(inb, 1, 8, "two");
    o.val_fraction = 0.3;
    cr_assert_eq(mlm_prepare(&o, &st, err, sizeof err), 0, "%s", err);
    cr_expect_gt(st.val.docs, 0);
    snprintf(cmd, sizeof cmd, "cd %s && cmp one/val/val-00000.shard two/val/val-00000.shard", tmpdir);
    cr_expect_eq(run_shell(cmd, out, sizeof out), 0, "val split depends on the corpus location: %s", out);
}

Test(prepare, an_empty_split_is_named) {
    write_file("vocab.txt", VOCAB);
    write_file("a.txt", "alpha beta");
    write_file("e.txt", "beta alpha");
    // Each document alone: whichever split it lands in, the other is empty (the
    // split hashes the name: a.txt lands in train, e.txt in val). An empty train
    // is an error (nothing kept); an empty val is a warning.
    int rc[2], in_val = 0;
    for (int i = 0; i < 2; i++) {
        char args[256];
        snprintf(args, sizeof args, "prepare --input %c.txt --vocab vocab.txt --seq-len 8 --out o%d --val-fraction 0.5",
                 "ae"[i], i);
        rc[i] = run_mlmgpu("", args, out, sizeof out);
        char manifest[256];
        snprintf(args, sizeof args, "o%d/manifest.json", i);
        tmp_path(manifest, sizeof manifest, args);
        if (rc[i] == 2) {
            in_val++;
            cr_expect(strstr(out, "no document went to train (1 documents, --val-fraction 0.5)"), "%s", out);
            cr_expect_neq(access(manifest, F_OK), 0, "a failed prepare left a manifest");
        } else {
            cr_expect_eq(rc[i], 0, "%s", out);
            cr_expect(strstr(out, "warning: --val-fraction 0.5 put none of the 1 documents in val"), "%s", out);
        }
    }
    cr_expect_eq(in_val, 1, "a.txt and e.txt should land in different splits");
    write_file("blank.txt", "\n  \n\n");
    cr_expect_eq(run_mlmgpu("", "prepare --input blank.txt --vocab vocab.txt --seq-len 8 --out p", out, sizeof out),
                 2);
    cr_expect(strstr(out, "no document went to train (0 documents"), "%s", out);
}

/* The default, BERT's format: blocks of lines between blank lines (a line of only
 * spaces is blank) are documents, [SEP] between them; --file-documents makes the
 * file one document, its blank lines mere whitespace. */
Test(prepare, blank_lines_split_documents_by_default) {
    write_file("vocab.txt", VOCAB);
    write_file("p.txt", "alpha beta\ngamma\n\n  \ndelta\n\n\nalpha\n");
    char p[256], err[1024];
    tmp_path(p, sizeof p, "p.txt");
    const char *in[] = {p};
    mlm_prepare_opts o = opts(in, 1, 32, "out");
    mlm_prepare_stats st;
    cr_assert_eq(mlm_prepare(&o, &st, err, sizeof err), 0, "%s", err);
    cr_expect_eq(st.train.docs, 3);
    int32_t seqs[64], want[] = {2, 5, 6, 7, 3, 8, 3, 5, 3, 0};
    cr_assert_eq(read_split("out", "train", 32, seqs, 2), 1);
    for (int i = 0; i < 10; i++) cr_expect_eq(seqs[i], want[i], "position %d: %d", i, seqs[i]);
    o = opts(in, 1, 32, "whole");
    o.file_documents = 1;
    cr_assert_eq(mlm_prepare(&o, &st, err, sizeof err), 0, "%s", err);
    cr_expect_eq(st.train.docs, 1);
    int32_t want1[] = {2, 5, 6, 7, 8, 5, 3, 0};
    cr_assert_eq(read_split("whole", "train", 32, seqs, 2), 1);
    for (int i = 0; i < 8; i++) cr_expect_eq(seqs[i], want1[i], "position %d: %d", i, seqs[i]);
    // the command line: the default, --file-documents, and --paragraphs (the old
    // name of the default) accepted and changing nothing; the manifest says which
    static const char *const cli[][2] = {{"", "paragraphs"}, {"--file-documents", "files"},
                                         {"--paragraphs", "paragraphs"}};
    for (int i = 0; i < 3; i++) {
        char args[256], cmd[512];
        snprintf(args, sizeof args, "prepare --input p.txt --vocab vocab.txt --seq-len 32 --out c%d %s", i, cli[i][0]);
        cr_assert_eq(run_mlmgpu("", args, out, sizeof out), 0, "%s", out);
        cr_expect(strstr(out, i == 1 ? "train: 1 documents" : "train: 3 documents"), "%s: %s", args, out);
        snprintf(cmd, sizeof cmd, "grep -q '\"documents\":[[:space:]]*\"%s\"' %s/c%d/manifest.json", cli[i][1], tmpdir, i);
        cr_expect_eq(run_shell(cmd, out, sizeof out), 0, "%s: manifest should say documents = %s", args, cli[i][1]);
    }
}

/* One big file (a wikitext or a dump): split at blank lines, its documents fill
 * both splits by default; as one document (--file-documents) val stays empty and
 * the warning names the way out. */
Test(prepare, one_big_file_gets_a_val_split) {
    write_file("vocab.txt", VOCAB);
    char *text = malloc(200 * 32), *w = text;
    for (int i = 0; i < 200; i++) w += sprintf(w, "%s gamma\n%s\n\n", i % 2 ? "alpha" : "beta", i % 3 ? "delta" : ".");
    write_file("big.txt", text);
    free(text);
    cr_assert_eq(run_mlmgpu("", "prepare --input big.txt --vocab vocab.txt --seq-len 16 --out d --val-fraction 0.1",
                            out, sizeof out), 0, "%s", out);
    unsigned long tr = 0, va = 0;
    const char *t = strstr(out, "train: "), *v = strstr(out, "val:   ");
    cr_assert(t && v, "%s", out);
    cr_assert_eq(sscanf(t, "train: %lu documents", &tr), 1);
    cr_assert_eq(sscanf(v, "val:   %lu documents", &va), 1);
    cr_expect_eq(tr + va, 200, "%s", out);
    cr_expect(va >= 5 && va <= 40, "val holds %lu of 200 documents at --val-fraction 0.1", va);
    cr_assert_eq(run_mlmgpu("", "prepare --input big.txt --vocab vocab.txt --seq-len 16 --out f --val-fraction 0.1 "
                                "--file-documents", out, sizeof out), 0, "%s", out);
    cr_expect(strstr(out, "put none of the 1 documents in val"), "%s", out);
    cr_expect(strstr(out, "without --file-documents, blank lines split files into documents"), "%s", out);
}

Test(prepare, bad_inputs_are_named) {
    write_file("vocab.txt", VOCAB);
    write_file("a.txt", "alpha");
    cr_expect_eq(run_mlmgpu("", "prepare --input nowhere --vocab vocab.txt --seq-len 8 --out o", out, sizeof out), 2);
    cr_expect(strstr(out, "nowhere: cannot read"), "%s", out);
    cr_expect_eq(run_mlmgpu("", "prepare --input a.txt --vocab none.txt --seq-len 8 --out o", out, sizeof out), 2);
    cr_expect(strstr(out, "none.txt: cannot open"), "%s", out);
    cr_expect_eq(run_mlmgpu("", "prepare --input a.txt --vocab vocab.txt --seq-len 2 --out o", out, sizeof out), 2);
    cr_expect(strstr(out, "--seq-len '2'"), "%s", out);
    cr_expect_eq(run_mlmgpu("", "prepare --input a.txt --vocab vocab.txt --seq-len 8 --out o --val-fraction 1",
                            out, sizeof out), 2);
    cr_expect(strstr(out, "--val-fraction '1'"), "%s", out);
    cr_expect_eq(run_mlmgpu("", "prepare --vocab vocab.txt --seq-len 8 --out o", out, sizeof out), 2);
    cr_expect(strstr(out, "--input PATH is required"), "%s", out);
    write_file("novocab.txt", "[PAD]\nalpha\n");
    cr_expect_eq(run_mlmgpu("", "prepare --input a.txt --vocab novocab.txt --seq-len 8 --out o", out, sizeof out), 2);
    cr_expect(strstr(out, "novocab.txt"), "%s", out);
    run_shell("true", out, sizeof out);
    char empty[256];
    tmp_path(empty, sizeof empty, "empty");
    mlm_mkdir_p(empty);
    cr_expect_eq(run_mlmgpu("", "prepare --input empty --vocab vocab.txt --seq-len 8 --out o", out, sizeof out), 2);
    cr_expect(strstr(out, "no files"), "%s", out);
    // an existing output is kept unless --force
    cr_assert_eq(run_mlmgpu("", "prepare --input a.txt --vocab vocab.txt --seq-len 8 --out o", out, sizeof out), 0,
                 "%s", out);
    cr_expect(strstr(out, "1 documents"), "%s", out);
    cr_expect_eq(run_mlmgpu("", "prepare --input a.txt --vocab vocab.txt --seq-len 8 --out o", out, sizeof out), 2);
    cr_expect(strstr(out, "already holds prepared data"), "%s", out);
    cr_expect_eq(run_mlmgpu("", "prepare --input a.txt --vocab vocab.txt --seq-len 8 --out o --force", out,
                            sizeof out), 0, "%s", out);
}

Test(prepare, shards_train) {
    char err[1024];
    const char *in[] = {MLM_SOURCE_ROOT "/tests/fixtures/vocab_corpus"};
    mlm_prepare_opts o = opts(in, 1, 64, "data");
    o.vocab = SAMPLE "/vocab.txt";
    o.val_fraction = 0.25;
    // blank-line documents (the default): hundreds of them, so both splits hold some
    o.shard_sequences = 1000;
    mlm_prepare_stats st;
    cr_assert_eq(mlm_prepare(&o, &st, err, sizeof err), 0, "%s", err);
    cr_expect_gt(st.train.sequences, 100);
    cr_expect_gt(st.val.sequences, 10);
    write_file("t.ini", "[model]\nhidden_size = 32\nnum_heads = 2\nintermediate_size = 64\n"
               "[data]\ntrain = data/train\nval = data/val\nvocab = data/vocab.txt\nseq_len = 64\n"
               "[train]\nmicro_batch = 4\nbatch = 4\nsteps = 3\nlog_every = 1\nout_dir = run\n");
    cr_expect_eq(run_mlmgpu("", "train --config t.ini --device cpu", out, sizeof out), 0, "%s", out);
    // whole-word masking on the same shards: the word starts come from data.vocab
    cr_expect_eq(run_mlmgpu("", "train --config t.ini --device cpu --set data.whole_word_mask=1 --set train.out_dir=wwm",
                            out, sizeof out), 0, "%s", out);
    cr_expect(strstr(out, "step      3/3"), "%s", out);
}

/* A byte-level BPE vocabulary (the committed RoBERTa-style fixture): recognised
 * from its files, sequences framed <s> ... </s>, padded with <pad> = 1 in version 2
 * shards, the same packing rules. The ids are RobertaTokenizerFast's over
 * tests/fixtures/bpe_vocab: "Hello world" = 1552 1672 (bpe_cases.txt, line 1),
 * "The capital of France." = 1861 604 84 301 281 308 511 86 1068 18. */
Test(prepare, bpe_vocabulary) {
    write_file("a.txt", "Hello world");
    write_file("b.txt", "The capital of France.");
    char a[256], b[256], err[1024];
    tmp_path(a, sizeof a, "a.txt");
    tmp_path(b, sizeof b, "b.txt");
    const char *in[] = {a, b};
    mlm_prepare_stats st;
    mlm_prepare_opts o = opts(in, 2, 8, "dir");
    o.vocab = MLM_SOURCE_ROOT "/tests/fixtures/bpe_vocab";   // a directory
    cr_assert_eq(mlm_prepare(&o, &st, err, sizeof err), 0, "%s", err);
    int32_t want[] = {0, 1552, 1672, 2, 1861, 604, 84, 2,       // </s> between the documents
                      0, 301, 281, 308, 511, 86, 1068, 2,
                      0, 18, 2, 1, 1, 1, 1, 1};               // padded with <pad> = 1
    char path[256];
    snprintf(path, sizeof path, "%s/dir/train", tmpdir);
    mlm_shards sh;
    cr_assert_eq(mlm_shards_open(&sh, path, 8, 0, err, sizeof err), 0, "%s", err);
    cr_assert_eq(sh.total, 3);
    cr_expect_eq(sh.pad_id, 1);
    int32_t seq[8], want_len[3] = {8, 8, 3};
    for (int i = 0; i < 3; i++) {
        cr_expect_eq(mlm_shards_get(&sh, i, seq, 5000, err, sizeof err), want_len[i], "sequence %d", i);
        for (int s = 0; s < 8; s++) cr_expect_eq(seq[s], want[8 * i + s], "sequence %d position %d: %d", i, s, seq[s]);
    }
    uint64_t vhash = sh.vocab_hash;
    mlm_shards_close(&sh);
    // the hash covers both files, and is what mlm_vocab_hash finds for the directory
    const char *files[2] = {MLM_SOURCE_ROOT "/tests/fixtures/bpe_vocab/vocab.json",
                            MLM_SOURCE_ROOT "/tests/fixtures/bpe_vocab/merges.txt"};
    cr_expect_eq(vhash, mlm_vocab_hash_files(files, 2, err, sizeof err));
    cr_expect_neq(vhash, mlm_vocab_hash_files(files, 1, err, sizeof err));
    cr_expect_eq(vhash, mlm_vocab_hash(MLM_SOURCE_ROOT "/tests/fixtures/bpe_vocab", err, sizeof err));
    // named by its vocab.json: the same bytes
    o = opts(in, 2, 8, "json");
    o.vocab = files[0];
    cr_assert_eq(mlm_prepare(&o, &st, err, sizeof err), 0, "%s", err);
    const char *same[] = {"train/train-00000.shard", "vocab.json", "merges.txt"};
    for (int i = 0; i < 3; i++) {
        char dir[128], json[128];
        snprintf(dir, sizeof dir, "dir/%s", same[i]);
        snprintf(json, sizeof json, "json/%s", same[i]);
        cr_expect(same_tmp_files(dir, json), "%s differs between the vocabulary given as a directory and as vocab.json", same[i]);
    }
    char *manifest = read_tmp("dir/manifest.json", NULL);
    cr_expect(strstr(manifest, "\"tokenizer\":\t\"bpe\"") && strstr(manifest, "\"pad_id\":\t1") &&
              strstr(manifest, "mlmgpu-shards-2"), "%s", manifest);
    free(manifest);
    snprintf(path, sizeof path, "%s/dir/vocab.txt", tmpdir);
    cr_expect_neq(access(path, F_OK), 0, "a BPE output holds a vocab.txt");
    // the CLI: the same, and a vocab.json without its merges.txt is named
    cr_expect_eq(run_mlmgpu("", "prepare --input a.txt b.txt --vocab " MLM_SOURCE_ROOT
                            "/tests/fixtures/bpe_vocab/vocab.json --seq-len 8 --out cli --val-fraction 0", out,
                            sizeof out), 0, "%s", out);
    cr_expect(same_tmp_files("dir/train/train-00000.shard", "cli/train/train-00000.shard"),
              "the CLI's shard differs from mlm_prepare's");
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cd %s && mkdir lone && cp %s/tests/fixtures/bpe_vocab/vocab.json lone/", tmpdir,
             MLM_SOURCE_ROOT);
    cr_assert_eq(run_shell(cmd, out, sizeof out), 0, "%s", out);
    cr_expect_eq(run_mlmgpu("", "prepare --input a.txt --vocab lone/vocab.json --seq-len 8 --out o", out, sizeof out),
                 2, "%s", out);
    cr_expect(strstr(out, "merges.txt"), "%s", out);
}

/* The unigram baseline (eval.c) by hand: "alpha alpha" and "beta zeta" (zeta is
 * not in the vocabulary: [UNK], which masking can pick) pack at seq_len 4 into
 * [CLS] 5 5 [SEP] | [CLS] 6 1 [SEP]. [CLS], [SEP] and padding do not count, so the
 * frequencies are alpha 1/2, beta 1/4, [UNK] 1/4: entropy 1.5 ln 2 nats. Sampling one
 * sequence of the two (the first) leaves only alpha: 0. */
Test(prepare, unigram_baseline_by_hand) {
    write_file("vocab.txt", VOCAB);
    write_file("a.txt", "alpha alpha");
    write_file("b.txt", "beta zeta");
    char a[256], b[256], err[1024], path[256];
    tmp_path(a, sizeof a, "a.txt");
    tmp_path(b, sizeof b, "b.txt");
    const char *in[] = {a, b};
    mlm_prepare_opts o = opts(in, 2, 4, "u");
    mlm_prepare_stats st;
    cr_assert_eq(mlm_prepare(&o, &st, err, sizeof err), 0, "%s", err);
    int32_t seqs[16], want[] = {2, 5, 5, 3, 2, 6, 1, 3};
    cr_assert_eq(read_split("u", "train", 4, seqs, 4), 2);
    for (int i = 0; i < 8; i++) cr_assert_eq(seqs[i], want[i], "position %d: %d", i, seqs[i]);
    tmp_path(path, sizeof path, "u/train");
    mlm_shards sh;
    cr_assert_eq(mlm_shards_open(&sh, path, 4, 0, err, sizeof err), 0, "%s", err);
    mlm_special_ids sp = mlm_special_ids_default(10);
    cr_expect_float_eq(mlm_unigram_baseline(&sh, &sp, 0), 1.5 * log(2.0), 1e-12);
    cr_expect_float_eq(mlm_unigram_baseline(&sh, &sp, 1), 0.0, 1e-12);
    // a padded tail: one more file, at seq_len 8 ([CLS] 5 5 [SEP] 6 1 [SEP] 8 | [CLS] 8 [SEP] pad...):
    // alpha 2, beta 1, [UNK] 1, delta 2 of 6
    mlm_shards_close(&sh);
    write_file("c.txt", "delta delta");
    char c[256];
    tmp_path(c, sizeof c, "c.txt");
    const char *in3[] = {a, b, c};
    o = opts(in3, 3, 8, "u8");
    cr_assert_eq(mlm_prepare(&o, &st, err, sizeof err), 0, "%s", err);
    tmp_path(path, sizeof path, "u8/train");
    cr_assert_eq(mlm_shards_open(&sh, path, 8, 0, err, sizeof err), 0, "%s", err);
    double p[] = {2 / 6.0, 1 / 6.0, 1 / 6.0, 2 / 6.0}, h = 0;
    for (int i = 0; i < 4; i++) h -= p[i] * log(p[i]);
    cr_expect_float_eq(mlm_unigram_baseline(&sh, &sp, 0), h, 1e-12);
    mlm_shards_close(&sh);
}

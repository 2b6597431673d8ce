/*
 * The training loop (include/mlm/train.h; its caller is `mlmgpu train`,
 * src/host/cli/cmd_train.c). The loader (loader.c) hands over step t's
 * micro-batches, read from the shuffled shards and all masked already (so the loss
 * can be normalised by the masked tokens of the whole step); the loop accumulates
 * gradients over the micro-batches, clips and applies AdamW (optimizer.c), then
 * logs. Validation (eval.c) runs every eval_every steps and at the end, with fixed
 * masking and no dropout.
 *
 * Data parallel (dist.h): rank r of W trains its slice of every global batch. The
 * ranks first sum their masked-token counts, so each scales its loss by 1 / masked
 * tokens of the global batch; the gradients are then summed over ranks, bucket by
 * bucket as the last micro-batch's backward completes them, and every rank applies
 * the same AdamW step (the grad norm, taken after the sum, is global). Validation is
 * split over the ranks and summed. Rank 0 alone logs, writes metrics and checkpoints
 * (the replicas are identical); on resume it alone reads the checkpoint and
 * broadcasts the weights, moments and step. A signal on any rank stops all of them
 * after the same step.
 */
#include "mlm/train.h"

#include <errno.h>
#include <signal.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mlm/checkpoint.h"
#include "mlm/dist.h"
#include "mlm/eval.h"
#include "mlm/fileio.h"
#include "mlm/loader.h"
#include "mlm/log.h"
#include "mlm/optimizer.h"

/* ---------------------------------------------------------------- run directory */

static FILE *open_in_run(const char *dir, const char *name, const char *mode) {
    char path[MLM_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, mode);
    if (!f) mlm_die(MLM_EXIT_INPUT, "%s: cannot write: %s", path, strerror(errno));
    return f;
}

static void fmt_duration(char *buf, size_t n, double s) {
    int t = (int)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%dh%02dm", t / 3600, t / 60 % 60);
    else snprintf(buf, n, "%dm%02ds", t / 60, t % 60);
}

/* ---------------------------------------------------------------- the loop */

typedef struct {
    const mlm_config *cfg;
    int rank, world;      // dist.h; rank 0 logs and writes
    mlm_model model;
    mlm_grad_sync *sync;  // the gradient all-reduce; NULL with one rank
    mlm_shards train, val;
    int have_val;
    mlm_special_ids sp;
    mlm_tokenizer *tok;   // NULL when data.vocab is not given
    uint8_t *word_start;  // whole-word masking's table, else NULL
    FILE *metrics;        // rank 0 only
} run_state;

/* Opens data.vocab (either kind, mlm_tokenizer_open) and checks it against the
 * model: the architecture's kind, all five special tokens, the rows. Returns the
 * vocabulary hash that ties shards to it. */
static uint64_t open_vocab(run_state *r) {
    const mlm_config *cfg = r->cfg;
    const char *where = cfg->source[0] ? cfg->source : "(default)";
    char err[1024];
    r->tok = mlm_tokenizer_open(cfg->data.vocab, cfg->data.cased, err, sizeof err);
    if (!r->tok) mlm_die(MLM_EXIT_INPUT, "data.vocab: %s", err);
    const char *files[2] = {NULL, NULL};
    int nfiles = mlm_tokenizer_files(r->tok, files);
    int bpe = mlm_tokenizer_kind(r->tok) == MLM_TOK_BPE;
    if (bpe != (cfg->model.architecture == MLM_ARCH_ROBERTA))
        mlm_die(MLM_EXIT_INPUT,
                "%s: model.architecture = %s does not match data.vocab = %s: that is a %s vocabulary (%s), and %s "
                "takes %s; change model.architecture or data.vocab", where, mlm_arch_name(cfg->model.architecture),
                cfg->data.vocab, bpe ? "byte-level BPE" : "WordPiece", files[0],
                mlm_arch_name(cfg->model.architecture),
                bpe ? "a WordPiece vocab.txt" : "a byte-level BPE vocab.json with merges.txt");
    static const char *const names[2][5] = {{"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"},
                                            {"<pad>", "<unk>", "<s>", "</s>", "<mask>"}};
    for (int i = 0; i < 5; i++)
        if (mlm_tokenizer_find(r->tok, names[bpe][i]) < 0)
            mlm_die(MLM_EXIT_INPUT, "data.vocab: %s: has no %s token", files[0], names[bpe][i]);
    r->sp = mlm_tokenizer_special(r->tok);
    int size = mlm_tokenizer_size(r->tok);
    if (size > cfg->model.vocab_size)
        mlm_die(MLM_EXIT_INPUT, "data.vocab: %s: %d tokens do not fit model.vocab_size = %d", files[0], size,
                cfg->model.vocab_size);
    if (cfg->data.whole_word_mask) r->word_start = mlm_word_starts(r->tok);
    uint64_t vhash = mlm_vocab_hash_files(files, nfiles, err, sizeof err);
    if (!vhash) mlm_die(MLM_EXIT_INPUT, "data.vocab: %s", err);
    return vhash;
}

/* The shards must pad with the vocabulary's pad id and, for whole-word masking,
 * say which vocabulary made them (the word starts come from it). */
static void check_shards(const run_state *r, const mlm_shards *sh, const char *key) {
    const mlm_config *cfg = r->cfg;
    if (sh->pad_id != r->sp.pad)
        mlm_die(MLM_EXIT_INPUT, "%s: %s: the shards pad with id %d, the %s pads with id %d (%s): they were "
                "prepared for another vocabulary", key, sh->paths[0], sh->pad_id,
                r->tok ? "vocabulary of data.vocab" : "standard vocabulary of model.architecture", r->sp.pad,
                r->tok ? cfg->data.vocab : mlm_arch_name(cfg->model.architecture));
    if (cfg->data.whole_word_mask && sh->vocab_hash == 0)
        mlm_die(MLM_EXIT_INPUT, "%s: %s: data.whole_word_mask = 1 needs shards that name their vocabulary, "
                "and these do not (vocab hash 0): prepare them again with `mlmgpu prepare --vocab %s`", key,
                sh->paths[0], cfg->data.vocab);
}

static void open_data(run_state *r) {
    const mlm_config *cfg = r->cfg;
    char err[1024];
    uint64_t vhash = 0;
    r->sp = mlm_special_ids_arch(cfg->model.architecture, cfg->model.vocab_size);
    if (cfg->data.vocab[0]) vhash = open_vocab(r);
    if (!cfg->data.train[0]) mlm_die(MLM_EXIT_INPUT, "%s: data.train: no training data given", cfg->source);
    if (mlm_shards_open(&r->train, cfg->data.train, cfg->data.seq_len, vhash, err, sizeof err) != 0)
        mlm_die(MLM_EXIT_INPUT, "data.train: %s", err);
    check_shards(r, &r->train, "data.train");
    r->have_val = cfg->data.val[0] != 0;
    if (r->have_val && mlm_shards_open(&r->val, cfg->data.val, cfg->data.seq_len, vhash, err, sizeof err) != 0)
        mlm_die(MLM_EXIT_INPUT, "data.val: %s", err);
    if (r->have_val) check_shards(r, &r->val, "data.val");
    if (r->rank == 0)
        mlm_log("data: %llu training sequences of %d tokens in %d file(s)%s", (unsigned long long)r->train.total,
                r->train.seq_len, r->train.nfiles, r->have_val ? "" : "; no validation set");
}

static void log_eval(run_state *r, int step) {
    const mlm_config *cfg = r->cfg;
    int n = cfg->train.eval_steps;
    uint64_t avail = r->val.total / (uint64_t)cfg->train.micro_batch;
    if (avail == 0) avail = 1;   // fewer sequences than a micro-batch: read them wrapped
    if ((uint64_t)n > avail) n = (int)avail;
    mlm_eval_result e = mlm_evaluate(&r->model, &r->val, cfg, &r->sp, r->word_start, n);   // every rank: a slice each
    if (r->rank != 0) return;
    mlm_log("val  step %6d | loss %.4f | acc %.4f | ppl %.2f | %ld masked tokens", step, e.loss, e.acc,
            exp(e.loss), e.tokens);
    fprintf(r->metrics, "{\"split\":\"val\",\"step\":%d,\"loss\":%.6f,\"acc\":%.6f,\"ppl\":%.4f,\"tokens\":%ld}\n",
            step, e.loss, e.acc, exp(e.loss), e.tokens);
    fflush(r->metrics);
}

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig) {
    stop_signal = sig;
    signal(sig, SIG_DFL);   // a second signal ends the process at once
}

/* One step in flight: queued on the backend, its statistics on their way back. */
typedef struct {
    int step;
    float lr;
    long masked;          // global
    float s[4];           // loss sum, correct, grad norm^2, spare: filled by download_finish
} step_flight;

/* Queues the loader's micro-batches of one step and the optimizer; nothing here
 * waits for the device. */
static void queue_step(run_state *r, mlm_loader *ld, step_flight *f) {
    mlm_step_data *d = mlm_loader_next(ld);
    if (d->step != f->step) mlm_die(MLM_EXIT_RUNTIME, "loader handed step %d for step %d", d->step, f->step);
    double masked = (double)d->masked_local;
    mlm_dist_allreduce_host(&masked, 1, "masked-token count");
    f->masked = (long)masked;
    float scale = masked > 0 ? 1.0f / (float)masked : 0.0f;
    for (int k = 0; k < ld->nmicro; k++) {
        if (k == ld->nmicro - 1) mlm_grad_sync_arm(r->sync);   // buckets leave as the backward ends them
        mlm_model_step_micro(&r->model, &d->micro[k].batch, scale);
    }
    mlm_grad_sync_finish(r->sync);
    mlm_loader_release(ld);
    mlm_optim_step(&r->model, &r->cfg->optim, f->step, f->lr);
    mlm_grad_sync_wait(r->sync);
}

/* The step's loss sum, correct count, masked count and grad norm, all global, and
 * whether a signal reached any rank: waits for the step to finish on the device. */
typedef struct { double loss, correct, grad_norm; long masked; int stop, sigint; } step_stats;

static step_stats finish_step(run_state *r, step_flight *f) {
    r->model.be->download_finish(r->model.be);
    double sums[4] = {f->s[0], f->s[1], stop_signal != 0, stop_signal == SIGINT};
    mlm_dist_allreduce_host(sums, 4, "step statistics");
    return (step_stats){sums[0], sums[1], sqrt(f->s[2]), f->masked, sums[2] > 0, sums[3] > 0};
}

static void print_startup(run_state *r, mlm_backend *be) {
    const mlm_model_config *c = &r->cfg->model;
    const mlm_train_config *t = &r->cfg->train;
    if (mlm_dist_active())
        mlm_log("data parallel: %d ranks (%d on this node), %d sequences per rank and step in %d micro-batch(es); "
                "gradients summed in %d buckets over %s", r->world, mlm_dist_local_size(), t->batch / r->world,
                t->batch / r->world / t->micro_batch, mlm_grad_buckets(&r->model.lay, NULL, 0),
                strcmp(be->name, "cuda") == 0 ? "NCCL" : "MPI");
    const mlm_layout *lay = &r->model.lay;
    mlm_log("model: %d layers, hidden %d, %d heads, FFN %d, vocab %d: %.2fM parameters", c->num_layers,
            c->hidden_size, c->num_heads, c->intermediate_size, c->vocab_size, lay->num_params / 1e6);
    size_t n = lay->num_params;
    mlm_log("memory (%s): parameters %.1f MiB, gradients + AdamW %.1f MiB, activations %.1f MiB", be->name,
            n * (be->wgt_size + (be->wgt_size != 4 ? 4 : 0)) / 1048576.0, n * 12 / 1048576.0,
            r->model.act_bytes / 1048576.0);
    size_t room = be->mem_free(be) + r->model.act_bytes;   // the arena is what grows with the micro-batch
    int fits = mlm_model_max_micro_batch(lay, be, r->cfg->data.seq_len, (double)r->model.max_M / r->model.max_B,
                                         room);
    mlm_log("memory (%s): %.2f GiB free after allocation; the largest micro_batch that fits is %d", be->name,
            (room - r->model.act_bytes) / 1073741824.0, fits);
}

/* Creates the model: fresh, imported from model.init_from, or resumed from a
 * checkpoint. Returns the first step to train. */
static int setup_model(run_state *r, mlm_config *cfg, mlm_backend *be, const char *resume, int max_M) {
    const mlm_train_config *t = &cfg->train;
    int S = cfg->data.seq_len;
    char err[2048], dir[2 * MLM_PATH_MAX] = "";
    // rank 0 alone reads a checkpoint; sync_replicas hands it to the others
    if (resume && r->rank == 0 && mlm_checkpoint_find(cfg, resume, dir, sizeof dir, err, sizeof err) != 0)
        mlm_die(MLM_EXIT_INPUT, "%s", err);
    if (cfg->model.init_from[0]) {
        if (mlm_model_load_dir(&r->model, cfg->model.init_from, &cfg->model, be, t->micro_batch, S, max_M,
                               t->seed, err, sizeof err) != 0)
            mlm_die(MLM_EXIT_INPUT, "model.init_from: %s", err);
        cfg->model = r->model.lay.cfg;   // the shape comes from the imported config.json
        if (r->rank == 0) mlm_log("model: imported from %s", cfg->model.init_from);
    } else {
        mlm_model_create(&r->model, &cfg->model, be, t->micro_batch, S, max_M, t->seed);
        mlm_model_init_params(&r->model, t->seed);
    }
    if (!dir[0]) return 1;
    int step;
    if (mlm_checkpoint_resume(&r->model, cfg, dir, &step, err, sizeof err) != 0)
        mlm_die(MLM_EXIT_INPUT, "--resume: %s", err);
    mlm_log("resumed from %s at step %d", dir, step);
    return step + 1;
}

/* Makes every rank start from rank 0's weights, AdamW moments and first step. */
static int sync_replicas(run_state *r, int first) {
    if (!mlm_dist_active()) return first;
    mlm_model *m = &r->model;
    mlm_backend *be = m->be;
    size_t n = m->lay.num_params;
    int32_t step = first;
    mlm_dist_bcast_host(&step, sizeof step, "start-step broadcast");
    mlm_dist_bcast_f32(be, m->master, n, "weight broadcast");
    mlm_dist_bcast_f32(be, m->m, n, "AdamW moment broadcast");
    mlm_dist_bcast_f32(be, m->v, n, "AdamW moment broadcast");
    be->copy_master_to_wgt(be, m->params, m->master, n);
    return step;
}

static void save_checkpoint(run_state *r, int step) {
    char err[2048];
    if (mlm_checkpoint_save(&r->model, r->cfg, step, err, sizeof err) != 0)
        mlm_die(MLM_EXIT_RUNTIME, "checkpoint at step %d: %s", step, err);
    mlm_log("checkpoint: %s/checkpoints/step_%07d", r->cfg->train.out_dir, step);
}

/* Loss and accuracy over the steps since the last log line. */
typedef struct { double loss, correct, t; long masked; int step; } log_window;

static void log_train(run_state *r, log_window *w, const step_stats *s, int step, int first, float lr, double t0) {
    const mlm_train_config *t = &r->cfg->train;
    double now = mlm_now_s(), tps = (double)(step - w->step) * t->batch * r->cfg->data.seq_len / (now - w->t);
    double loss = w->masked ? w->loss / w->masked : 0, acc = w->masked ? w->correct / w->masked : 0;
    char el[32], eta[32];
    fmt_duration(el, sizeof el, now - t0);
    fmt_duration(eta, sizeof eta, (now - t0) / (step - first + 1) * (t->steps - step));
    mlm_log("step %6d/%d | loss %.4f | acc %.4f | lr %.3e | grad norm %.3f | %.0f tok/s | %s elapsed | ETA %s", step,
            t->steps, loss, acc, lr, s->grad_norm, tps, el, eta);
    fprintf(r->metrics,
            "{\"split\":\"train\",\"step\":%d,\"loss\":%.6f,\"acc\":%.6f,\"lr\":%.6e,\"grad_norm\":%.6f,"
            "\"tokens_per_s\":%.1f,\"elapsed_s\":%.3f}\n",
            step, loss, acc, lr, s->grad_norm, tps, now - t0);
    fflush(r->metrics);
    *w = (log_window){0, 0, now, 0, step};
}

/* Adds a finished step to the log window and logs it when due; MLM_EXIT_RUNTIME
 * when its loss or gradient norm is not finite (global values: every rank stops). */
static int account_step(run_state *r, log_window *w, const step_flight *f, const step_stats *s, int first,
                        double t0) {
    const mlm_train_config *t = &r->cfg->train;
    if (!isfinite(s->loss) || !isfinite(s->grad_norm)) {
        if (r->rank == 0)
            mlm_log("error: step %d: the loss or gradient norm is not finite (loss sum %g, grad norm %g); "
                    "stopping. Lower optim.lr or raise optim.warmup_steps.", f->step, s->loss, s->grad_norm);
        return MLM_EXIT_RUNTIME;
    }
    w->loss += s->loss;
    w->correct += s->correct;
    w->masked += s->masked;
    if (r->rank == 0 && (f->step % t->log_every == 0 || f->step == t->steps || s->stop))
        log_train(r, w, s, f->step, first, f->lr, t0);
    return 0;
}

/* Stops with exit 2 unless every rank gets whole micro-batches of the same size. */
static void check_split(const mlm_config *cfg, int world) {
    const mlm_train_config *t = &cfg->train;
    if (t->batch % (t->micro_batch * world) != 0)
        mlm_dist_die_all(MLM_EXIT_INPUT,
                         "%s: train.batch %d is not a multiple of train.micro_batch %d x %d ranks = %d: every rank "
                         "trains whole micro-batches of the same size; change train.batch or train.micro_batch",
                         cfg->source[0] ? cfg->source : "(default)", t->batch, t->micro_batch, world,
                         t->micro_batch * world);
}

int mlm_train(const mlm_config *config, mlm_backend *be, const char *resume) {
    mlm_config cfg = *config;
    run_state r = {.cfg = &cfg, .rank = mlm_dist_rank(), .world = mlm_dist_world()};
    const mlm_train_config *t = &cfg.train;
    int S = cfg.data.seq_len;
    mlm_dist_set_timeout(cfg.dist.timeout_s);
    check_split(&cfg, r.world);
    mlm_dist_attach(be);
    int max_M = mlm_max_masked(t->micro_batch * S, cfg.data.mask_prob);
    int first = setup_model(&r, &cfg, be, resume, max_M);   // first: init_from may set the shape
    first = sync_replicas(&r, first);
    open_data(&r);
    if (r.rank == 0) {
        if (mlm_mkdir_p(t->out_dir) != 0)
            mlm_die(MLM_EXIT_INPUT, "train.out_dir: cannot create %s: %s", t->out_dir, strerror(errno));
        FILE *cf = open_in_run(t->out_dir, "config.ini", "w");
        mlm_config_write(&cfg, cf);
        fclose(cf);
        r.metrics = open_in_run(t->out_dir, "metrics.jsonl", first > 1 ? "a" : "w");
        print_startup(&r, be);
        if (first > t->steps)
            mlm_log("the checkpoint is at step %d of %d: nothing left to train", first - 1, t->steps);
    }
    r.sync = mlm_grad_sync_create(&r.model);
    mlm_loader ld;
    mlm_loader_start(&ld, &r.train, &cfg, &r.sp, r.word_start, r.rank, r.world, first, t->steps, max_M);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    double t0 = mlm_now_s();
    log_window w = {0, 0, t0, 0, first - 1};
    int rc = 0, stopped = 0;
    step_flight flights[2], *behind = NULL;   // behind: the step before, still to be accounted for
    for (int step = first; step <= t->steps && rc == 0; step++) {
        mlm_dist_set_step(step);
        mlm_dist_fault_point(step);
        step_flight *f = &flights[step & 1];
        *f = (step_flight){.step = step, .lr = mlm_lr_at(&cfg.optim, step, t->steps)};
        queue_step(&r, &ld, f);
        // While this step runs on the device, the host reads the one before: the
        // statistics of step t are read after step t+1 is queued. A step after which
        // the host needs the model (eval, checkpoint, end, a signal) or the other
        // ranks (data parallel) is read at once.
        if (behind) {
            step_stats s = finish_step(&r, behind);
            rc = account_step(&r, &w, behind, &s, first, t0);
            behind = NULL;
            if (rc) break;
        }
        mlm_model_stats_start(&r.model, f->s);   // read after the next step is queued
        int at_eval = r.have_val && ((t->eval_every && step % t->eval_every == 0) || step == t->steps);
        int at_ckpt = step == t->steps || (t->checkpoint_every && step % t->checkpoint_every == 0);
        if (r.world == 1 && !at_eval && !at_ckpt && !stop_signal) {
            behind = f;
            continue;
        }
        step_stats s = finish_step(&r, f);
        if ((rc = account_step(&r, &w, f, &s, first, t0)) != 0) break;
        if (at_eval) log_eval(&r, step);
        if (s.stop) {
            if (r.rank == 0) {
                mlm_log("%s at step %d: writing a checkpoint; continue with --resume auto",
                        s.sigint ? "interrupted" : "terminated", step);
                save_checkpoint(&r, step);
            }
            stopped = 1;
            break;
        }
        if (r.rank == 0 && at_ckpt) save_checkpoint(&r, step);
    }
    if (rc == 0 && !stopped && r.rank == 0 && r.have_val && r.tok)
        mlm_print_predictions(&r.model, &r.val, &cfg, &r.sp, r.tok, r.word_start, 8);
    mlm_loader_stop(&ld);
    mlm_grad_sync_destroy(r.sync);
    mlm_dist_detach();
    if (r.tok) mlm_tokenizer_free(r.tok);
    free(r.word_start);
    if (r.metrics) fclose(r.metrics);
    mlm_model_destroy(&r.model);
    mlm_shards_close(&r.train);
    if (r.have_val) mlm_shards_close(&r.val);
    return rc;
}

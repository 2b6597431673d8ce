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

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mlm/checkpoint.h"
#include "mlm/dist.h"
#include "mlm/eval.h"
#include "mlm/fileio.h"
#include "mlm/loader.h"
#include "mlm/log.h"
#include "mlm/optimizer.h"
#include "mlm/events.h"
#include "mlm/plot.h"

/* ---------------------------------------------------------------- run directory */

/* Opens dir/name for writing; only a regular file (or none) is accepted there: a
 * FIFO would block the run, a device swallow its metrics. */
static FILE *open_in_run(const char *dir, const char *name, const char *mode) {
    char path[MLM_PATH_MAX + 64], err[2 * MLM_PATH_MAX + 128], *target;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (mlm_output_target(path, &target, err, sizeof err) != 0) mlm_die(MLM_EXIT_INPUT, "train.out_dir: %s", err);
    FILE *f = fopen(target, mode);
    if (!f) mlm_die(MLM_EXIT_INPUT, "%s: cannot write: %s", path, strerror(errno));
    free(target);
    return f;
}

/* Takes the run directory for this process: an exclusive lock on out_dir/.lock that
 * the kernel drops when the process ends (however it ends), so a second trainer on
 * the same directory is refused instead of interleaving with the first. */
static int lock_run_dir(const char *dir) {
    char path[MLM_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/.lock", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0644);
    if (fd < 0) mlm_die(MLM_EXIT_INPUT, "train.out_dir: %s: cannot create the lock: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = 0;
        pid[strcspn(pid, "\n")] = 0;
        mlm_die(MLM_EXIT_INPUT, "train.out_dir: %s is in use by another mlmgpu train (pid %s); wait for it or "
                "choose another train.out_dir", dir, pid[0] ? pid : "?");
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n)
        mlm_die(MLM_EXIT_INPUT, "train.out_dir: %s: cannot write the lock: %s", path, strerror(errno));
    return fd;
}

/* What of a run dir holds: a non-empty metrics.jsonl or any checkpoint. */
static int holds_a_run(const char *dir, char *what, size_t n) {
    char path[MLM_PATH_MAX + 64];
    struct stat st;
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    if (lstat(path, &st) == 0 && st.st_size > 0) {
        snprintf(what, n, "%s", path);
        return 1;
    }
    snprintf(path, sizeof path, "%s/checkpoints", dir);
    DIR *d = opendir(path);
    if (!d) return 0;
    int found = 0;
    for (struct dirent *e; !found && (e = readdir(d));)
        if (e->d_name[0] != '.') found = 1, snprintf(what, n, "%s/%s", path, e->d_name);
    closedir(d);
    return found;
}

/* Rank 0, before any work: locks out_dir, finds the checkpoint to resume from (dir,
 * "" for a fresh start), and refuses to start over in a directory that holds a run
 * unless overwrite, which then clears its checkpoints. */
static int claim_run_dir(const mlm_config *cfg, const char *resume, int overwrite, char *dir, size_t dir_len) {
    const char *out = cfg->train.out_dir;
    char err[4 * MLM_PATH_MAX], what[2 * MLM_PATH_MAX];
    if (mlm_mkdir_p(out) != 0) mlm_die(MLM_EXIT_INPUT, "train.out_dir: cannot create %s: %s", out, strerror(errno));
    int fd = lock_run_dir(out);
    dir[0] = 0;
    if (resume && mlm_checkpoint_find(cfg, resume, dir, dir_len, err, sizeof err) != 0)
        mlm_die(MLM_EXIT_INPUT, "%s", err);
    if (dir[0] || !holds_a_run(out, what, sizeof what)) return fd;
    if (!overwrite)
        mlm_die(MLM_EXIT_INPUT, "train.out_dir: %s holds a run (%s): continue it with --resume auto, start over "
                "with --overwrite (its checkpoints and metrics are deleted), or choose another train.out_dir", out,
                what);
    snprintf(what, sizeof what, "%s/checkpoints", out);
    mlm_remove_tree(what);
    mlm_log("--overwrite: starting over in %s (its checkpoints and metrics deleted)", out);
    return fd;
}

/* Appends one line to metrics.jsonl, whole or not at all: a failed write (a full
 * disk, a file-size limit) cuts the file back to its last whole line and stops the
 * run with an error, instead of losing steps silently and leaving a torn line. */
__attribute__((format(printf, 3, 4)))
static void metrics_line(FILE *f, const char *dir, const char *fmt, ...) {
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    long good = ftell(f);
    if (n > 0 && (size_t)n < sizeof line && fwrite(line, 1, (size_t)n, f) == (size_t)n && fflush(f) == 0) return;
    int e = errno;
    clearerr(f);
    int cut = good >= 0 && ftruncate(fileno(f), good) == 0 && fseek(f, good, SEEK_SET) == 0;
    mlm_die(MLM_EXIT_RUNTIME, "%s/metrics.jsonl: write failed: %s; %s", dir, strerror(e),
            cut ? "the file ends at its last whole line" : "its last line may be torn");
}

/* The scalars of a metrics line, as one TensorBoard event (events.h); a failed
 * write stops the run as metrics_line's does, the file cut back to its last whole
 * record. */
static void event_scalars(mlm_events *ev, int step, const char *const *tags, const double *v, int n) {
    char err[2 * MLM_PATH_MAX];
    if (ev && mlm_events_scalars(ev, step, tags, v, n, err, sizeof err) != 0) mlm_die(MLM_EXIT_RUNTIME, "%s", err);
}

/* out_dir/loss.svg from metrics.jsonl (plot.h), when rank 0 ends a run however it
 * ends: a finished run fails when it cannot be drawn, a stopped or failed one keeps
 * its exit code and warns. */
static void draw_loss(const char *dir, int rc) {
    char err[4 * MLM_PATH_MAX];
    mlm_plot_counts c;
    if (mlm_plot_run(dir, &c, err, sizeof err) == 0) mlm_log("loss picture: %s/loss.svg", dir);
    else if (rc == 0) mlm_die(MLM_EXIT_RUNTIME, "loss.svg: %s", err);
    else mlm_log("warning: no loss.svg: %s", err);
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
    uint64_t vocab_hash;  // of data.vocab's files as read at the start (0: no data.vocab)
    uint8_t *word_start;  // whole-word masking's table, else NULL
    double baseline;      // the unigram baseline of data.train (mlm_unigram_baseline), rank 0; < 0: none
    FILE *metrics;        // rank 0 only
    mlm_events *events;   // rank 0 only: the TensorBoard event file of this process
    int state_step;       // the model holds the weights and moments after this step
    int state_busy;       // CUDA: an update is queued behind the gradient all-reduce (no safe state)
    int saved_step;       // the newest checkpoint written or resumed from (0: none)
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
    char err[2 * MLM_PATH_MAX];
    if (mlm_shards_check_ids(sh, cfg->model.vocab_size, err, sizeof err) != 0)
        mlm_die(MLM_EXIT_INPUT, "%s: %s", key, err);
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
    r->sp = mlm_special_ids_arch(cfg->model.architecture, cfg->model.vocab_size);
    uint64_t vhash = r->vocab_hash = cfg->data.vocab[0] ? open_vocab(r) : 0;
    if (!cfg->data.train[0]) mlm_die(MLM_EXIT_INPUT, "%s: data.train: no training data given", cfg->source);
    if (mlm_shards_open(&r->train, cfg->data.train, cfg->data.seq_len, vhash, err, sizeof err) != 0)
        mlm_die(MLM_EXIT_INPUT, "data.train: %s", err);
    check_shards(r, &r->train, "data.train");
    // beside every validation loss: what predicting token frequencies alone scores
    // (at most 2^17 sequences of data.train, evenly spread: a fraction of a second)
    r->baseline = r->rank == 0 ? mlm_unigram_baseline(&r->train, &r->sp, 1u << 17) : -1;
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
    if (e.tokens == 0) {   // a loss of 0 and perplexity 1 would read as a perfect score
        mlm_log("val  step %6d | nothing to score: no masked tokens in %d micro-batch(es) of data.val (all padding, "
                "or data.mask_prob = %g)", step, n, (double)cfg->data.mask_prob);
        metrics_line(r->metrics, cfg->train.out_dir,
                     "{\"split\":\"val\",\"step\":%d,\"loss\":null,\"acc\":null,\"ppl\":null,\"tokens\":0}\n", step);
        return;
    }
    char base[64] = "", base_json[48] = "";
    if (r->baseline >= 0) {
        snprintf(base, sizeof base, " (unigram baseline %.4f)", r->baseline);
        snprintf(base_json, sizeof base_json, ",\"baseline\":%.6f", r->baseline);
    }
    mlm_log("val  step %6d | loss %.4f%s | acc %.4f | ppl %.2f | %ld masked tokens", step, e.loss, base, e.acc,
            exp(e.loss), e.tokens);
    metrics_line(r->metrics, cfg->train.out_dir,
                 "{\"split\":\"val\",\"step\":%d,\"loss\":%.6f%s,\"acc\":%.6f,\"ppl\":%.4f,\"tokens\":%ld}\n",
                 step, e.loss, base_json, e.acc, exp(e.loss), e.tokens);
    static const char *const tags[] = {"val/loss", "val/acc", "val/ppl", "val/unigram_baseline"};
    event_scalars(r->events, step, tags, (double[]){e.loss, e.acc, exp(e.loss), r->baseline}, r->baseline >= 0 ? 4 : 3);
}

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig) {
    static const char msg[] = "\nmlmgpu: signal received: the step finishes, a checkpoint is written, then exit "
                              "(a second signal ends the process at once, without a checkpoint)\n";
    if (!stop_signal) {
        ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);   // async-signal-safe; nothing to do on failure
        (void)w;
    }
    stop_signal = sig;
    mlm_dist_signal_received();
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
    // CPU: the all-reduce completes here, before AdamW touches weights or moments. CUDA:
    // AdamW is queued behind NCCL, so until the wait the device state is mid-update.
    r->state_busy = r->sync && strcmp(r->model.be->name, "cuda") == 0;
    mlm_grad_sync_finish(r->sync);
    mlm_loader_release(ld);
    mlm_optim_step(&r->model, &r->cfg->optim, f->step, f->lr);
    mlm_grad_sync_wait(r->sync);
    r->state_step = f->step, r->state_busy = 0;
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
    int fits = mlm_model_max_micro_batch(lay, be, r->cfg->data.seq_len, r->cfg->data.mask_prob,
                                         room);
    mlm_log("memory (%s): %.2f GiB free after allocation; the largest micro_batch that fits is %d", be->name,
            (room - r->model.act_bytes) / 1073741824.0, fits);
}

/* Creates the model: fresh or imported from model.init_from (whose config.json
 * sets the shape). Reads files, writes none. */
static void setup_model(run_state *r, mlm_config *cfg, mlm_backend *be, int max_M) {
    const mlm_train_config *t = &cfg->train;
    int S = cfg->data.seq_len;
    char err[2048];
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
}

/* Loads the checkpoint of dir ("": none) into the model; returns the first step. */
static int resume_from(run_state *r, const mlm_config *cfg, const char *dir) {
    char err[2048];
    if (!dir[0]) return 1;
    int step;
    if (mlm_checkpoint_resume(&r->model, cfg, r->vocab_hash, dir, &step, err, sizeof err) != 0)
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
    if (mlm_checkpoint_save(&r->model, r->cfg, r->vocab_hash, step, err, sizeof err) != 0)
        mlm_die(MLM_EXIT_RUNTIME, "checkpoint at step %d: %s", step, err);
    r->saved_step = step;
    mlm_log("checkpoint: %s/checkpoints/step_%07d", r->cfg->train.out_dir, step);
}

/* Rank 0, when a collective failed or timed out (dist.h; the job is aborted next):
 * saves the last completed step, which rank 0 holds whole (weights and moments are
 * those after state_step: the failing step's update has not been applied), so the
 * steps since the last regular checkpoint are not lost. Not on CUDA while AdamW waits
 * behind the gradient all-reduce (the update would be applied over partial sums). */
static void on_dist_failure(void *ctx, const char *missing) {
    run_state *r = ctx;
    char err[2048];
    if (r->state_busy) {
        mlm_log("no checkpoint on failure: the failure hit the gradient all-reduce of step %d on CUDA, with the "
                "update queued behind it; the checkpoint of step %d stands", r->state_step + 1, r->saved_step);
        return;
    }
    if (r->state_step <= r->saved_step) {
        if (r->saved_step > 0) mlm_log("checkpoint on failure: step %d is saved already", r->saved_step);
        return;
    }
    if (mlm_checkpoint_save_on_failure(&r->model, r->cfg, r->vocab_hash, r->state_step, missing, err, sizeof err) !=
        0) {
        mlm_log("error: checkpoint on failure at step %d: %s", r->state_step, err);
        return;
    }
    mlm_log("checkpoint on failure: %s/checkpoints/step_%07d (step %d%s%s); once the fault is fixed, continue with "
            "--resume auto", r->cfg->train.out_dir, r->state_step, r->state_step, missing[0] ? ", no answer from rank(s) " : "",
            missing);
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
    metrics_line(r->metrics, t->out_dir,
                 "{\"split\":\"train\",\"step\":%d,\"loss\":%.6f,\"acc\":%.6f,\"lr\":%.6e,\"grad_norm\":%.6f,"
                 "\"tokens_per_s\":%.1f,\"elapsed_s\":%.3f}\n",
                 step, loss, acc, lr, s->grad_norm, tps, now - t0);
    static const char *const tags[] = {"train/loss", "train/acc", "train/lr", "train/grad_norm", "train/tokens_per_s"};
    event_scalars(r->events, step, tags, (double[]){loss, acc, lr, s->grad_norm, tps}, 5);
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

int mlm_train(const mlm_config *config, mlm_backend *be, const char *resume, int overwrite) {
    mlm_config cfg = *config;
    run_state r = {.cfg = &cfg, .rank = mlm_dist_rank(), .world = mlm_dist_world()};
    const mlm_train_config *t = &cfg.train;
    int S = cfg.data.seq_len;
    mlm_dist_set_timeout(cfg.dist.timeout_s);
    check_split(&cfg, r.world);
    mlm_dist_attach(be);
    int max_M = mlm_max_masked(t->micro_batch * S, cfg.data.mask_prob);
    setup_model(&r, &cfg, be, max_M);   // first: init_from may set the shape the data is checked against
    open_data(&r);
    // every input checked: now the run directory (rank 0 alone reads a checkpoint,
    // sync_replicas hands it to the others)
    char ckpt[2 * MLM_PATH_MAX] = "";
    int lock = r.rank == 0 ? claim_run_dir(&cfg, resume, overwrite, ckpt, sizeof ckpt) : -1;
    int first = sync_replicas(&r, resume_from(&r, &cfg, ckpt));
    r.state_step = r.saved_step = first - 1;
    if (r.rank == 0) mlm_dist_set_failure_hook(on_dist_failure, &r);
    if (r.rank == 0) {
        printf("# resolved configuration\n");   // after init_from: the shape actually trained
        mlm_config_write(&cfg, stdout);
        fflush(stdout);
        FILE *cf = open_in_run(t->out_dir, "config.ini", "w");
        mlm_config_write(&cfg, cf);
        if (fflush(cf) != 0 || ferror(cf) || fclose(cf) != 0)
            mlm_die(MLM_EXIT_RUNTIME, "%s/config.ini: write failed: %s", t->out_dir, strerror(errno));
        r.metrics = open_in_run(t->out_dir, "metrics.jsonl", first > 1 ? "a" : "w");
        char err[4 * MLM_PATH_MAX];   // a fresh start clears the event files, as metrics.jsonl
        if (!(r.events = mlm_events_open(t->out_dir, first, err, sizeof err)))
            mlm_die(MLM_EXIT_INPUT, "train.out_dir: %s", err);
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
        // a logged step is read at once too: its tokens/s then spans whole steps the
        // device has finished, not the host's bookkeeping one step behind
        int at_log = step % t->log_every == 0;
        if (r.world == 1 && !at_eval && !at_ckpt && !at_log && !stop_signal) {
            behind = f;
            continue;
        }
        step_stats s = finish_step(&r, f);
        if ((rc = account_step(&r, &w, f, &s, first, t0)) != 0) break;
        if (at_eval) log_eval(&r, step);
        if (s.stop) {
            int sig = s.sigint ? SIGINT : SIGTERM;
            if (r.rank == 0) {
                mlm_log("%s at step %d: writing a checkpoint; continue with --resume auto (exit code %d)",
                        s.sigint ? "interrupted" : "terminated", step, 128 + sig);
                save_checkpoint(&r, step);
            }
            stopped = 1;
            rc = 128 + sig;   // as a shell reports a signal: not a finished run
            break;
        }
        if (r.rank == 0 && at_ckpt) save_checkpoint(&r, step);
        if (at_eval || at_ckpt) w.t = mlm_now_s();   // tokens/s leaves out evaluation and checkpoint time
    }
    if (!stopped && rc == 0 && r.rank == 0 && r.have_val && r.tok)
        mlm_print_predictions(&r.model, &r.val, &cfg, &r.sp, r.tok, r.word_start, 8);
    mlm_dist_set_failure_hook(NULL, NULL);
    mlm_loader_stop(&ld);
    mlm_grad_sync_destroy(r.sync);
    mlm_dist_detach();
    if (r.tok) mlm_tokenizer_free(r.tok);
    free(r.word_start);
    if (r.metrics && fclose(r.metrics) != 0 && rc == 0)
        mlm_die(MLM_EXIT_RUNTIME, "%s/metrics.jsonl: closing failed: %s", t->out_dir, strerror(errno));
    char cerr[4 * MLM_PATH_MAX];
    if (r.events && mlm_events_close(r.events, cerr, sizeof cerr) != 0 && rc == 0)
        mlm_die(MLM_EXIT_RUNTIME, "%s", cerr);
    if (r.rank == 0) draw_loss(t->out_dir, rc);
    if (lock >= 0) close(lock);
    mlm_model_destroy(&r.model);
    mlm_shards_close(&r.train);
    if (r.have_val) mlm_shards_close(&r.val);
    return rc;
}

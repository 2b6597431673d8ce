/*
 * Checkpoints that HF transformers loads, exact resume, and import of HF BERT
 * checkpoints (docs/FORMATS.md has the directory layout).
 *
 * <out_dir>/checkpoints/step_NNNNNNN/
 *   model.safetensors        fp32, HF BertForMaskedLM (RobertaForMaskedLM) names, [out, in] layouts
 *   config.json              HF BertConfig (RobertaConfig), architectures ["BertForMaskedLM"] (["RobertaForMaskedLM"])
 *   vocab.txt (RoBERTa: vocab.json, merges.txt), tokenizer_config.json, special_tokens_map.json
 *   optimizer.safetensors    AdamW moments in our buffer layout
 *   trainer_state.json       step, seed, world size, vocab hash, loader position
 *   mlmgpu.ini               the resolved run configuration
 * <out_dir>/checkpoints/latest -> step_NNNNNNN
 * A checkpoint is written into a temporary directory, every file fsynced, then
 * renamed into place; `latest` moves only after that. model.safetensors holds the
 * fp32 master weights exactly.
 */
#ifndef MLM_CHECKPOINT_H
#define MLM_CHECKPOINT_H

#include <stddef.h>

#include "mlm/config.h"
#include "mlm/model.h"

/* Reads the shape fields and the architecture (model_type, architectures; BERT when
 * it names neither) of an HF config.json in dir into mc (other fields kept). */
int mlm_hf_read_config(const char *dir, mlm_model_config *mc, char *err, size_t err_len);

/* Whether dir's tokenizer is cased: do_lower_case false in tokenizer_config.json
 * (absent file or key: uncased, HF's default). */
int mlm_hf_read_cased(const char *dir, int *cased, char *err, size_t err_len);

/* Loads an HF directory (config.json + model.safetensors) into a fresh model on be
 * with room for max_B x S and max_M masked rows; base gives what config.json lacks.
 * The directory's architecture must be base->architecture: callers that take it
 * from the directory read it first with mlm_hf_read_config. */
int mlm_model_load_dir(mlm_model *m, const char *dir, const mlm_model_config *base, mlm_backend *be, int max_B,
                       int S, int max_M, uint64_t seed, char *err, size_t err_len);

/* Writes the checkpoint of step into cfg->train.out_dir/checkpoints and prunes to
 * checkpoint_keep. vocab_hash is mlm_vocab_hash of cfg->data.vocab as the run read
 * it at its start (0: no data.vocab), recorded in trainer_state.json. Returns 0 or -1
 * with err (the previous checkpoints stay). */
int mlm_checkpoint_save(mlm_model *m, const mlm_config *cfg, uint64_t vocab_hash, int step, char *err,
                        size_t err_len);

/* The same, for a job whose collective failed (dist.h): trainer_state.json also says
 * "written_on_failure": true and "unanswered_ranks": the ranks listed in missing
 * ("1, 3"; "" or NULL when not known). */
int mlm_checkpoint_save_on_failure(mlm_model *m, const mlm_config *cfg, uint64_t vocab_hash, int step,
                                   const char *missing, char *err, size_t err_len);

/* The checkpoint directory for --resume: "auto" is out_dir/checkpoints/latest when
 * it exists (else "" = start fresh), anything else is a directory. */
int mlm_checkpoint_find(const mlm_config *cfg, const char *resume, char *dir, size_t dir_len, char *err,
                        size_t err_len);

/* Restores weights and AdamW moments from dir into m (created for cfg) and returns
 * the step it was written at in *step. Fails clearly when the checkpoint's model
 * shape differs from cfg's, or its vocabulary hash from vocab_hash (as for
 * mlm_checkpoint_save; 0: no data.vocab, not checked). */
int mlm_checkpoint_resume(mlm_model *m, const mlm_config *cfg, uint64_t vocab_hash, const char *dir, int *step,
                          char *err, size_t err_len);

#endif

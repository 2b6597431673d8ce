/*
 * TensorBoard event files (src/host/train/events.c): the scalars of metrics.jsonl
 * as `tensorboard --logdir OUT_DIR` reads them, written by hand without a protobuf
 * library. A file is a sequence of TFRecords (little-endian uint64 length, masked
 * CRC-32C of those 8 bytes, the data, masked CRC-32C of the data), each holding
 * one serialised tensorboard.Event: the first says file_version "brain.Event:2",
 * the second is a SessionLog START at the process's first step (TensorBoard then
 * drops what an earlier process wrote from that step on: a run resumed from a
 * checkpoint older than its last event is shown once, with the values written
 * last), the others carry a Summary of simple_value scalars. docs/FORMATS.md, "TensorBoard
 * event files", has the byte layout and what a resumed run looks like.
 */
#ifndef MLM_EVENTS_H
#define MLM_EVENTS_H

#include <stddef.h>
#include <stdint.h>

/* CRC-32C (Castagnoli, reflected polynomial 0x82F63B78, initial and final value
 * 0xFFFFFFFF) of n bytes: crc32c("123456789") = 0xE3069283. */
uint32_t mlm_crc32c(const void *data, size_t n);

/* TFRecord's masked CRC: ((c >> 15) | (c << 17)) + 0xA282EAD8 of c = crc32c. */
uint32_t mlm_crc32c_masked(const void *data, size_t n);

/* Frames n bytes of data as one TFRecord into out (n + 16 bytes); returns n + 16. */
size_t mlm_tfrecord_frame(const void *data, size_t n, uint8_t *out);

/* Serialises one tensorboard.Event into out (cap bytes): wall_time (field 1,
 * double), step (2, int64), file_version (3) when not NULL, a session_log (7) of
 * status START (SessionLog field 1, value 1) when session_start, and when nvalues
 * > 0 a summary (5) whose values (Summary field 1) each hold a tag (Value field 1)
 * and a simple_value (Value field 2, float). Returns the byte count, or 0 when it
 * does not fit in cap. */
size_t mlm_event_encode(uint8_t *out, size_t cap, double wall_time, int64_t step, const char *file_version,
                        int session_start, const char *const *tags, const float *values, int nvalues);

/* An open event file: one per process, in the run directory. */
typedef struct mlm_events mlm_events;

/* Starts a new event file in dir, events.out.tfevents.<unix seconds>.<hostname>.<pid>,
 * with its file_version record and a SessionLog START at first_step, the first
 * step this process trains. Its seconds are one more than those of the newest
 * event file already there when that is not older, so a resumed run's file sorts
 * after the files before it (TensorBoard reads a directory's files in name order).
 * A fresh run (first_step 1) first deletes the event files already in dir, as
 * metrics.jsonl starts over. Returns NULL with `path: what is wrong`. */
mlm_events *mlm_events_open(const char *dir, int64_t first_step, char *err, size_t err_len);

/* The path of the file. */
const char *mlm_events_path(const mlm_events *ev);

/* Appends one Event at step holding n scalars (tags[i] = values[i]), stamped with
 * the current time, whole or not at all: a failed write cuts the file back to its
 * last whole record and returns -1 with `path: write failed: why; ...`. Values are
 * stored as float, as simple_value is. */
int mlm_events_scalars(mlm_events *ev, int64_t step, const char *const *tags, const double *values, int n,
                       char *err, size_t err_len);

/* Closes and frees ev (NULL: nothing); -1 with err when closing failed. */
int mlm_events_close(mlm_events *ev, char *err, size_t err_len);

#endif

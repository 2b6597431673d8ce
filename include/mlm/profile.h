/*
 * Where the time of a step goes, op by op: a backend wrapper (backend_wrap.h)
 * that waits for the device before and after every op and adds the time between
 * to the op's (name, shape) entry. Waiting serialises the host and the device, so
 * the profiled step is slower than a real one (a few microseconds per op on a
 * GPU); the split between the ops is what it is for. Replays are off under it:
 * every op is seen. bench_step --profile prints the table.
 */
#ifndef MLM_PROFILE_H
#define MLM_PROFILE_H

#include <stdio.h>

#include "mlm/backend.h"

typedef struct mlm_profile mlm_profile;

/* Wraps be (the wrapper's destroy destroys be); *out receives the profile, which
 * outlives the wrapper until mlm_profile_free. */
mlm_backend *mlm_profile_wrap(mlm_backend *be, mlm_profile **out);
void mlm_profile_reset(mlm_profile *p);
void mlm_profile_free(mlm_profile *p);

/* Calls and seconds of op over all its shapes; 0 calls when never seen. */
void mlm_profile_op(const mlm_profile *p, const char *op, long *calls, double *seconds);
/* Seconds over every timed op. */
double mlm_profile_seconds(const mlm_profile *p);

/* The table, largest first: op, shape, calls per unit, ms per unit, share of the
 * profiled time; `units` divides (e.g. the number of steps). */
void mlm_profile_print(const mlm_profile *p, FILE *f, int units, int max_rows);
/* The same as one JSON object per line: {"profile_op":..,"shape":..,"calls":..,"ms":..,"share":..}. */
void mlm_profile_json(const mlm_profile *p, FILE *f, int units);

#endif

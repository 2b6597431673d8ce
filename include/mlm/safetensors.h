/*
 * safetensors reader and writer (https://huggingface.co/docs/safetensors), our own,
 * with cJSON for the header. The reader validates what the format requires: file
 * size, header length limit (100 MB), JSON object of tensors with known dtypes,
 * shapes whose byte size equals end - begin, offsets in bounds, contiguous and
 * non-overlapping, covering the whole data section. The writer writes a temporary
 * file, fsyncs it and renames it into place.
 */
#ifndef MLM_SAFETENSORS_H
#define MLM_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

typedef enum { MLM_ST_F32, MLM_ST_F16, MLM_ST_BF16, MLM_ST_I32, MLM_ST_I64, MLM_ST_U8, MLM_ST_F64 } mlm_st_dtype;

#define MLM_ST_MAX_DIMS 8

typedef struct {
    char *name;
    mlm_st_dtype dtype;
    int ndim;
    int64_t shape[MLM_ST_MAX_DIMS];
    size_t numel;
    const void *data;      // points into the file's data section
    size_t bytes;
} mlm_st_tensor;

typedef struct {
    int count;
    mlm_st_tensor *tensors;
    char *metadata_json;   // the "__metadata__" object as JSON text, or NULL
    void *map;             // whole file contents
    size_t map_bytes;
} mlm_st_file;

/* Returns 0, or -1 with `path: what is wrong` in err. */
int mlm_st_open(mlm_st_file *f, const char *path, char *err, size_t err_len);
/* The same on bytes already in memory (a malloc'd buffer that f takes over, freed by
 * mlm_st_close also on failure); name stands for the path in messages. */
int mlm_st_parse(mlm_st_file *f, void *buf, size_t bytes, const char *name, char *err, size_t err_len);
void mlm_st_close(mlm_st_file *f);
const mlm_st_tensor *mlm_st_find(const mlm_st_file *f, const char *name);
/* Reads tensor name as fp32 (from F32, F16, BF16, F64 or I32/I64) into out, which holds
 * expect_numel values; fails naming the tensor if missing or of another size. */
int mlm_st_read_f32(const mlm_st_file *f, const char *name, float *out, size_t expect_numel,
                    char *err, size_t err_len);
/* Same for integer tensors (I32 or I64) into int32. */
int mlm_st_read_i32(const mlm_st_file *f, const char *name, int32_t *out, size_t expect_numel,
                    char *err, size_t err_len);

/* A tensor to write: data in host memory, already in dtype. */
typedef struct {
    const char *name;
    mlm_st_dtype dtype;
    int ndim;
    int64_t shape[MLM_ST_MAX_DIMS];
    const void *data;
} mlm_st_out;

/* Writes tensors (in the given order) with metadata pairs (key, value strings,
 * nmeta of them) to path atomically. Returns 0 or -1 with err. */
int mlm_st_write(const char *path, const mlm_st_out *tensors, int count, const char *const *meta_keys,
                 const char *const *meta_values, int nmeta, char *err, size_t err_len);

#endif

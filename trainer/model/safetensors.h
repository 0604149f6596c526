/* trainer/model/safetensors.h: reading Hugging Face safetensors files and checkpoint directories.
 *
 * A safetensors file is a little-endian u64 header length, a JSON header mapping tensor names to
 * {dtype, shape, data_offsets}, then the raw bytes. pc_st_open() memory-maps the file and checks the
 * header against the file before anything is read: every tensor's byte range lies inside the data
 * section, ranges do not overlap, and dtype size x shape equals the byte size. A checkpoint
 * (pc_ckpt) is a directory holding model.safetensors or the shards that model.safetensors.index.json
 * lists.
 *
 * Ownership: a pc_st_tensor (its name, its data) is borrowed from the file or checkpoint that returned
 * it and lives until that is closed. Errors are written to err (naming the file and the tensor) and
 * signalled by a non-zero return; nothing here prints or exits. Not thread-safe to open/close; lookups
 * on an open checkpoint are read-only and may run from several threads. */
#ifndef PC_SAFETENSORS_H
#define PC_SAFETENSORS_H
#include <stddef.h>
#include <stdint.h>

typedef enum {
  PC_DT_F32, PC_DT_F16, PC_DT_BF16, PC_DT_F64, PC_DT_I64, PC_DT_I32, PC_DT_I16, PC_DT_I8, PC_DT_U8,
  PC_DT_BOOL, PC_DT_F8_E4M3, PC_DT_F8_E5M2, PC_DT_U16, PC_DT_U32, PC_DT_U64, PC_DT_COUNT
} pc_dtype;

#define PC_ST_MAX_DIMS 8

typedef struct {
  const char *name;
  const char *file;          /* the path of the file that holds it */
  pc_dtype dtype;
  int ndim;
  int64_t shape[PC_ST_MAX_DIMS];
  int64_t numel;
  const void *data;          /* inside the mapping; may be unaligned */
  size_t nbytes;
} pc_st_tensor;

typedef struct pc_st_file pc_st_file;
typedef struct pc_ckpt pc_ckpt;

const char *pc_dtype_name(pc_dtype dt);
int pc_dtype_from_name(const char *name, pc_dtype *out); /* 0 when known */
size_t pc_dtype_size(pc_dtype dt);

/* Maps and validates one file. On success *out owns the mapping; close with pc_st_close. */
int pc_st_open(const char *path, pc_st_file **out, char *err, size_t errlen);
void pc_st_close(pc_st_file *f);
const pc_st_tensor *pc_st_find(const pc_st_file *f, const char *name);
/* The "__metadata__" object's value for key, or NULL (borrowed). */
const char *pc_st_metadata(const pc_st_file *f, const char *key);

/* Opens DIR/model.safetensors, or the shards of DIR/model.safetensors.index.json (a missing shard, or
 * a tensor the index places in a shard that lacks it, is an error naming both). */
int pc_ckpt_open(const char *dir, pc_ckpt **out, char *err, size_t errlen);
/* One safetensors file as a checkpoint (a LoRA adapter's adapter_model.safetensors). */
int pc_ckpt_open_file(const char *path, pc_ckpt **out, char *err, size_t errlen);
void pc_ckpt_close(pc_ckpt *c);
const pc_st_tensor *pc_ckpt_find(const pc_ckpt *c, const char *name);
int pc_ckpt_count(const pc_ckpt *c);
const pc_st_tensor *pc_ckpt_at(const pc_ckpt *c, int i);

/* Converts an F32/F16/BF16 tensor to float32 into out (numel floats). Other dtypes are an error. */
int pc_tensor_to_f32(const pc_st_tensor *t, float *out, char *err, size_t errlen);
/* Checks t's shape against the expected dims (ndim of them); an error names file, tensor and both. */
int pc_tensor_check_shape(const pc_st_tensor *t, int ndim, const int64_t *dims, char *err, size_t errlen);

float pc_bf16_to_f32(uint16_t h);
float pc_f16_to_f32(uint16_t h);
uint16_t pc_f32_to_bf16(float f);  /* round to nearest even */
uint16_t pc_f32_to_f16(float f);   /* round to nearest even */

/* Writing (`init`, adapters, checkpoints, models): tensors are written in the order given, float32 data
 * converted to dtype. */
typedef struct {
  const char *name;
  int ndim;
  int64_t shape[PC_ST_MAX_DIMS];
  const float *data;
} pc_st_write_tensor;
int pc_st_write(const char *path, const pc_st_write_tensor *ts, int n, pc_dtype dtype, char *err, size_t errlen);

#endif

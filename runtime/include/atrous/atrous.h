/*
 * Atrous on-device runtime: a C API over the TVM runtime for models compiled by `atrous compile`.
 *
 * A model library (model.so) carries its own signature (input/output names, dtypes, shapes), so a program
 * needs nothing but the file. Every call that can fail returns 0 on success and -1 on failure (NULL for
 * atrous_load); atrous_last_error() then says why, in one line. Nothing aborts on bad input.
 *
 *   atrous_model* m = atrous_load("model.so");
 *   if (!m) { fprintf(stderr, "%s\n", atrous_last_error()); return 1; }
 *   atrous_set_input(m, "x", data, nbytes);
 *   atrous_run(m);
 *   atrous_get_output(m, 0, out, out_nbytes);
 *   atrous_free(m);
 *
 * Not thread-safe per model: use one atrous_model per thread. Errors are kept per thread.
 */
#ifndef ATROUS_ATROUS_H_
#define ATROUS_ATROUS_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ATROUS_MAX_NDIM 8

typedef struct atrous_model atrous_model;

typedef struct {
  const char* name;   /* owned by the model */
  const char* dtype;  /* numpy spelling: "float32", "int64", ... */
  int ndim;
  int64_t shape[ATROUS_MAX_NDIM];
  size_t nbytes;      /* bytes of a dense, C-ordered buffer of this tensor */
} atrous_tensor_info;

/* The last error of this thread ("" if none), and clearing it. */
const char* atrous_last_error(void);
void atrous_clear_error(void);

/* Load a compiled model library and prepare it to run on the CPU. NULL on failure. */
atrous_model* atrous_load(const char* path);
void atrous_free(atrous_model* model);

/* The compiled signature. */
int atrous_num_inputs(const atrous_model* model);
int atrous_num_outputs(const atrous_model* model);
int atrous_input_info(const atrous_model* model, int index, atrous_tensor_info* info);
int atrous_output_info(const atrous_model* model, int index, atrous_tensor_info* info);
/* Index of the input called `name`, or -1 (with an error naming the valid inputs). */
int atrous_input_index(const atrous_model* model, const char* name);

/* Copy `nbytes` (must equal the input's nbytes) of C-ordered data into the input called `name`. */
int atrous_set_input(atrous_model* model, const char* name, const void* data, size_t nbytes);
/* Run once on the inputs set so far (all of them must be set). */
int atrous_run(atrous_model* model);
/* Copy output `index` of the last run into `data` (`nbytes` must equal the output's nbytes). */
int atrous_get_output(const atrous_model* model, int index, void* data, size_t nbytes);

/* Threads the TVM runtime runs a model's kernels on, for models run from the calling thread. Unless the
 * environment sets TVM_NUM_THREADS before the first atrous_load, atrous_load sets it to the physical cores of the
 * process's CPU affinity mask (TVM's own default is half the cores on x86). Fixed once the thread's first model
 * has run. */
int atrous_threads(void);

/* The runtime's version string ("atrous-runtime <version> (tvm <version>)"). */
const char* atrous_version(void);

#ifdef __cplusplus
}
#endif

#endif /* ATROUS_ATROUS_H_ */

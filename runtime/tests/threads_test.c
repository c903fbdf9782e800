/* Two models in one process, run from two threads at once through the C API, against each run alone. Driven by
 * tests/test_runtime.py (also built with ThreadSanitizer):
 *
 *   atrous-threads-test MODEL_A.so INPUT_A.raw MODEL_B.so INPUT_B.raw ROUNDS
 *
 * Each model is loaded and run alone first (its outputs kept). Then two threads each load their own model and run
 * it ROUNDS times at once, comparing every output byte for byte with the alone run (the kernels split work over
 * disjoint tiles, so a run is deterministic). Prints one line per thread; exits non-zero on any difference. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atrous/atrous.h"

typedef struct {
  const char* model_path;
  char* input;  /* every input's bytes, concatenated in order */
  char* expected;  /* every output's bytes of the run alone */
  size_t expected_bytes;
  int rounds;
  int differences;
  char error[512];
} job;

static char* read_file(const char* path) {
  FILE* f = fopen(path, "rb");
  if (f == NULL) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char* data = malloc((size_t)n + 1);
  if (data != NULL && fread(data, 1, (size_t)n, f) != (size_t)n) data = (free(data), NULL);
  fclose(f);
  return data;
}

/* Load, set the inputs, run `rounds` times; the outputs of the last run in `*outputs` (malloc'd). */
static int run(job* j, char** outputs, size_t* output_bytes, int compare) {
  atrous_model* m = atrous_load(j->model_path);
  if (m == NULL) return snprintf(j->error, sizeof j->error, "load: %s", atrous_last_error()), -1;
  size_t offset = 0;
  atrous_tensor_info info;
  for (int i = 0; i < atrous_num_inputs(m); ++i) {
    atrous_input_info(m, i, &info);
    if (atrous_set_input(m, info.name, j->input + offset, info.nbytes) != 0) {
      snprintf(j->error, sizeof j->error, "set_input: %s", atrous_last_error());
      return atrous_free(m), -1;
    }
    offset += info.nbytes;
  }
  size_t total = 0;
  for (int i = 0; i < atrous_num_outputs(m); ++i) total += (atrous_output_info(m, i, &info), info.nbytes);
  char* out = malloc(total);
  for (int round = 0; round < j->rounds; ++round) {
    if (atrous_run(m) != 0) {
      snprintf(j->error, sizeof j->error, "run: %s", atrous_last_error());
      return free(out), atrous_free(m), -1;
    }
    offset = 0;
    for (int i = 0; i < atrous_num_outputs(m); ++i) {
      atrous_output_info(m, i, &info);
      atrous_get_output(m, i, out + offset, info.nbytes);
      offset += info.nbytes;
    }
    if (compare && (total != j->expected_bytes || memcmp(out, j->expected, total) != 0)) ++j->differences;
  }
  atrous_free(m);
  *outputs = out;
  *output_bytes = total;
  return 0;
}

static void* thread_main(void* arg) {
  job* j = arg;
  char* out = NULL;
  size_t bytes = 0;
  if (run(j, &out, &bytes, 1) != 0) j->differences = -1;
  free(out);
  return NULL;
}

int main(int argc, char** argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: atrous-threads-test MODEL_A.so INPUT_A.raw MODEL_B.so INPUT_B.raw ROUNDS\n");
    return 2;
  }
  job jobs[2];
  memset(jobs, 0, sizeof jobs);
  for (int t = 0; t < 2; ++t) {
    jobs[t].model_path = argv[1 + 2 * t];
    jobs[t].input = read_file(argv[2 + 2 * t]);
    if (jobs[t].input == NULL) return fprintf(stderr, "cannot read %s\n", argv[2 + 2 * t]), 2;
    jobs[t].rounds = 1;
    if (run(&jobs[t], &jobs[t].expected, &jobs[t].expected_bytes, 0) != 0) {
      return printf("FAIL: %s alone: %s\n", jobs[t].model_path, jobs[t].error), 1;
    }
    jobs[t].rounds = atoi(argv[5]);
  }
  pthread_t threads[2];
  for (int t = 0; t < 2; ++t) pthread_create(&threads[t], NULL, thread_main, &jobs[t]);
  int failed = 0;
  for (int t = 0; t < 2; ++t) {
    pthread_join(threads[t], NULL);
    int ok = jobs[t].differences == 0;
    printf("%s: thread %d, %s, %d runs: %s\n", ok ? "ok" : "FAIL", t, jobs[t].model_path, jobs[t].rounds,
           jobs[t].differences < 0 ? jobs[t].error : ok ? "same outputs as alone" : "outputs differ from alone");
    failed += !ok;
  }
  for (int t = 0; t < 2; ++t) free(jobs[t].input), free(jobs[t].expected);
  return failed ? 1 : 0;
}

/* Exercises the C API from C, errors included. Driven by tests/test_runtime.py:
 *
 *   atrous-capi-test MODEL.so INPUT.raw OUTPUT.raw NOT_A_MODEL
 *
 * Loads MODEL.so, feeds INPUT.raw (the raw bytes of every input, concatenated in order) and writes the raw bytes
 * of every output to OUTPUT.raw, then checks that each misuse fails cleanly with a message. Prints one line per
 * check; exits non-zero if any check failed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atrous/atrous.h"

static int failures = 0;

static void expect_error(int failed, const char* what, const char* must_contain) {
  const char* msg = atrous_last_error();
  int ok = failed && msg[0] != '\0' && strstr(msg, must_contain) != NULL;
  printf("%s: %s -> %s\n", ok ? "ok" : "FAIL", what, msg);
  failures += !ok;
  atrous_clear_error();
}

static long file_size(FILE* f) {
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  return n;
}

int main(int argc, char** argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: atrous-capi-test MODEL.so INPUT.raw OUTPUT.raw NOT_A_MODEL\n");
    return 2;
  }
  expect_error(atrous_load(NULL) == NULL, "load(NULL)", "NULL");
  expect_error(atrous_load("/nonexistent/model.so") == NULL, "load(missing file)", "cannot read");
  expect_error(atrous_load(argv[4]) == NULL, "load(not a model)", argv[4]);

  atrous_model* m = atrous_load(argv[1]);
  if (m == NULL) {
    printf("FAIL: load(%s) -> %s\n", argv[1], atrous_last_error());
    return 1;
  }
  printf("ok: loaded %s (%s)\n", argv[1], atrous_version());

  atrous_tensor_info info;
  expect_error(atrous_input_info(m, atrous_num_inputs(m), &info) != 0, "input_info(out of range)", "out of range");
  expect_error(atrous_input_index(m, "no-such-input") < 0, "input_index(unknown name)", "inputs:");
  expect_error(atrous_get_output(m, 0, &info, sizeof(info)) != 0, "get_output before run", "atrous_run first");
  expect_error(atrous_run(m) != 0, "run with no inputs set", "was not set");

  FILE* in = fopen(argv[2], "rb");
  if (in == NULL) return printf("FAIL: cannot open %s\n", argv[2]), 1;
  long total = file_size(in);
  char* data = malloc((size_t)total + 1);
  if (fread(data, 1, (size_t)total, in) != (size_t)total) return printf("FAIL: short read\n"), 1;
  fclose(in);

  size_t offset = 0;
  for (int i = 0; i < atrous_num_inputs(m); ++i) {
    atrous_input_info(m, i, &info);
    printf("input %d: %s %s ndim %d, %zu bytes\n", i, info.name, info.dtype, info.ndim, info.nbytes);
    if (i == 0) {
      expect_error(atrous_set_input(m, info.name, data, info.nbytes + 4) != 0, "set_input(wrong size)",
                   "recompile");
    }
    if (offset + info.nbytes > (size_t)total) return printf("FAIL: INPUT.raw too short\n"), 1;
    if (atrous_set_input(m, info.name, data + offset, info.nbytes) != 0) {
      return printf("FAIL: set_input(%s) -> %s\n", info.name, atrous_last_error()), 1;
    }
    offset += info.nbytes;
  }
  if (atrous_run(m) != 0) return printf("FAIL: run -> %s\n", atrous_last_error()), 1;
  expect_error(atrous_get_output(m, atrous_num_outputs(m), data, 4) != 0, "get_output(out of range)",
               "out of range");

  FILE* out = fopen(argv[3], "wb");
  for (int i = 0; i < atrous_num_outputs(m); ++i) {
    atrous_output_info(m, i, &info);
    expect_error(atrous_get_output(m, i, data, info.nbytes - 1) != 0, "get_output(small buffer)", "buffer");
    char* buffer = malloc(info.nbytes);
    if (atrous_get_output(m, i, buffer, info.nbytes) != 0) {
      return printf("FAIL: get_output(%d) -> %s\n", i, atrous_last_error()), 1;
    }
    fwrite(buffer, 1, info.nbytes, out);
    free(buffer);
    printf("output %d: %s %s ndim %d, %zu bytes\n", i, info.name, info.dtype, info.ndim, info.nbytes);
  }
  fclose(out);
  free(data);
  atrous_free(m);
  printf("%d failure(s)\n", failures);
  return failures != 0;
}

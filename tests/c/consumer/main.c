/* qtl's C API from C99: quantize -> GEMV against the C++ API (bit for bit), serialize ->
 * deserialize -> the same GEMV, and every error path a status plus a message naming the value.
 * Run under ASan + UBSan by ctest's c_api_consumer in the sanitizer build (leaks are errors). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qtl/c/qtl.h>

int reference_rtn_uniform4_gemv(const float* w, size_t rows, size_t cols, const float* x, float* y);

static int failures = 0;
#define CHECK(cond)                                                         \
  do {                                                                      \
    if (!(cond)) {                                                          \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                           \
    }                                                                       \
  } while (0)
/* The call failed with `status` and the message names `needle`. */
#define CHECK_ERROR(call, status, needle)                                               \
  do {                                                                                  \
    qtl_status s_ = (call);                                                             \
    CHECK(s_ == (status));                                                              \
    if (strstr(qtl_last_error(), (needle)) == NULL) {                                   \
      fprintf(stderr, "%s:%d: message '%s' lacks '%s'\n", __FILE__, __LINE__, qtl_last_error(), (needle)); \
      ++failures;                                                                       \
    }                                                                                   \
  } while (0)

enum { ROWS = 48, COLS = 96 };

/* A deterministic pseudo-random float in [-1, 1). */
static float next(unsigned* state) {
  *state = *state * 1664525u + 1013904223u;
  return (float)((*state >> 8) & 0xFFFFu) / 32768.0f - 1.0f;
}

int main(void) {
  static float w[ROWS * COLS], x[COLS], y[ROWS], y_ref[ROWS], y_back[ROWS];
  unsigned state = 12345u;
  size_t i, size = 0, rows = 0, cols = 0;
  double bpw = 0.0;
  const char* format = NULL;
  qtl_matrix* m = NULL;
  qtl_matrix* back = NULL;
  qtl_quantize_options o;
  unsigned char* bytes;

  for (i = 0; i < ROWS * COLS; ++i) w[i] = next(&state);
  for (i = 0; i < COLS; ++i) x[i] = next(&state);
  printf("qtl %s, kernel path %s\n", qtl_version(), qtl_kernel_path());

  /* quantize -> GEMV equals the C++ API's result bit for bit */
  qtl_quantize_options_init(&o);
  o.format = "uniform4";
  o.group_size = 32;
  CHECK(qtl_quantize(w, ROWS, COLS, &o, &m) == QTL_OK);
  CHECK(m != NULL);
  CHECK(qtl_matrix_info(m, &rows, &cols, &bpw, &format) == QTL_OK);
  CHECK(rows == ROWS && cols == COLS && strcmp(format, "uniform4") == 0);
  CHECK(bpw > 4.0 && bpw < 5.0);
  CHECK(qtl_gemv(m, x, y, 1) == QTL_OK);
  CHECK(reference_rtn_uniform4_gemv(w, ROWS, COLS, x, y_ref) == 0);
  CHECK(memcmp(y, y_ref, sizeof y) == 0);

  /* serialize -> deserialize -> GEMV unchanged */
  CHECK(qtl_serialize(m, NULL, 0, &size) == QTL_OK);
  bytes = (unsigned char*)malloc(size);
  CHECK(bytes != NULL);
  CHECK(qtl_serialize(m, bytes, size, &size) == QTL_OK);
  CHECK(qtl_deserialize(bytes, size, &back) == QTL_OK);
  CHECK(qtl_gemv(back, x, y_back, 2) == QTL_OK);
  CHECK(memcmp(y, y_back, sizeof y) == 0);
  qtl_matrix_free(back);
  back = NULL;

  /* error paths: a status and a message naming the value */
  CHECK_ERROR(qtl_quantize(NULL, ROWS, COLS, &o, &back), QTL_ERROR_INVALID_ARGUMENT, "weights is NULL");
  CHECK(back == NULL);
  CHECK_ERROR(qtl_quantize(w, 0, COLS, &o, &back), QTL_ERROR_INVALID_ARGUMENT, "0x96");
  CHECK_ERROR(qtl_gemv(NULL, x, y, 1), QTL_ERROR_INVALID_ARGUMENT, "matrix is NULL");
  CHECK_ERROR(qtl_gemv(m, NULL, y, 1), QTL_ERROR_INVALID_ARGUMENT, "x is NULL");
  o.format = "int3";
  CHECK_ERROR(qtl_quantize(w, ROWS, COLS, &o, &back), QTL_ERROR_INVALID_ARGUMENT, "unknown format 'int3'");
  o.format = "uniform4";
  w[7 * COLS + 5] = NAN;
  CHECK_ERROR(qtl_quantize(w, ROWS, COLS, &o, &back), QTL_ERROR_INVALID_ARGUMENT, "(7, 5)");
  w[7 * COLS + 5] = 0.5f;
  CHECK_ERROR(qtl_deserialize(bytes, size - 1, &back), QTL_ERROR_CORRUPT_DATA, "qtl_deserialize");
  CHECK_ERROR(qtl_deserialize(bytes, 20, &back), QTL_ERROR_CORRUPT_DATA, "20 bytes");
  bytes[100] ^= 1u;
  CHECK_ERROR(qtl_deserialize(bytes, size, &back), QTL_ERROR_CORRUPT_DATA, "checksum");
  CHECK(back == NULL);

  /* GPTQ on calibration inputs, int8 activations, two threads */
  {
    enum { TOKENS = 256 };
    static float calib[TOKENS * COLS];
    for (i = 0; i < TOKENS * COLS; ++i) calib[i] = next(&state);
    qtl_quantize_options_init(&o);
    o.format = "uniform3";
    o.method = QTL_METHOD_GPTQ;
    o.activations = calib;
    o.tokens = TOKENS;
    o.kernel_activations = QTL_ACTIVATIONS_INT8;
    o.threads = 2;
    CHECK(qtl_quantize(w, ROWS, COLS, &o, &back) == QTL_OK);
    CHECK(qtl_gemm(back, calib, COLS, 1, y_back, ROWS, 2) == QTL_OK);
    for (i = 0; i < ROWS; ++i) CHECK(isfinite(y_back[i]));
    qtl_matrix_free(back);
  }

  free(bytes);
  qtl_matrix_free(m);
  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("qtl C API consumer: all checks passed\n");
  return 0;
}

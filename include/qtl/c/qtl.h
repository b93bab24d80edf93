/* qtl/c/qtl.h — qtl's C API: quantize, pack, serialize, load and multiply from C (C99).
 *
 * The library behind it (CMake target qtl::qtl_c, libqtl_c.so) is compiled C++; a program using
 * this header needs only a C compiler. No C++ type or exception crosses the boundary: every call
 * returns a qtl_status, and qtl_last_error() gives the message of this thread's last failure
 * (the qtl::Error text, naming the offending value).
 *
 *   qtl_quantize_options o;
 *   qtl_quantize_options_init(&o);            // RTN, group 32, fp32 activations, one thread
 *   o.format = "uniform4";
 *   o.method = QTL_METHOD_GPTQ;
 *   o.activations = calib; o.tokens = n;      // [n x cols] calibration inputs (or o.hessian)
 *   qtl_matrix* m = NULL;
 *   if (qtl_quantize(w, rows, cols, &o, &m) != QTL_OK) fprintf(stderr, "%s\n", qtl_last_error());
 *   qtl_gemv(m, x, y, 2);                     // y[rows] = W_hat x[cols], two threads
 *   qtl_matrix_free(m);
 *
 * Thread safety: qtl_gemv, qtl_gemm, qtl_matrix_info and qtl_serialize only read the matrix and
 * may run on one matrix from many threads at once; qtl_matrix_free must not race with them.
 * qtl_quantize and qtl_deserialize create independent matrices and are safe from any thread.
 * qtl_last_error is per thread. Thread counts given to the calls are OpenMP threads inside the
 * call; results do not depend on them.
 *
 * Serialized layout (version 1; all integers little-endian):
 *   0   char[4]  "QTLM"
 *   4   u32      layout version (1)
 *   8   u32      format id: uniform2..4 1-3, uniform8 4, uniform5 5, uniform6 6, nf4 16, log2-2..4 17-19, ternary 20,
 *                q4_0 64, q4_1 65, q5_0 66, q5_1 67, q8_0 68, iq4_nl 69, tq1_0 70, tq2_0 71,
 *                q2_K..q6_K 72-76
 *   12  u32      flags: bit 0 = int8 activations, bit 1 = input scales present
 *   16  u64      rows
 *   24  u64      cols
 *   32  u32      group size: weights per group along a row (a whole row: cols)
 *   36  u32      reserved, 0
 *   40  u64      payload bytes P
 *   48  P bytes  payload: the packed format's own bytes (qtl/format/packed_matrix.hpp,
 *                qtl/format/table_packed.hpp; for the GGUF types the ggml type as a u32, then
 *                ggml's block bytes), then,
 *                when flag bit 1 is set, cols f32 input scales in [2^-40, 2^40] (x is divided
 *                by them: AWQ); flag bit 2 marks one group for the whole matrix (group size 0)
 *   48+P u64     FNV-1a 64 of bytes [0, 48+P)
 * Any other byte sequence is rejected with QTL_ERROR_CORRUPT_DATA and a message.
 */
#ifndef QTL_C_QTL_H
#define QTL_C_QTL_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32) || !defined(__GNUC__)
#define QTL_C_EXPORT
#else
#define QTL_C_EXPORT __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define QTL_C_SERIALIZED_VERSION 1u

typedef enum qtl_status {
  QTL_OK = 0,
  QTL_ERROR_INVALID_ARGUMENT = 1, /* null pointer, bad shape, NaN/Inf, unknown format or method */
  QTL_ERROR_CORRUPT_DATA = 2,     /* qtl_deserialize: bytes that are not a valid serialized matrix */
  QTL_ERROR_BUFFER_TOO_SMALL = 3, /* qtl_serialize: capacity below the size it reports */
  QTL_ERROR_OUT_OF_MEMORY = 4,
  QTL_ERROR_INTERNAL = 5,
  QTL_ERROR_CANCELLED = 6         /* qtl_quantize_model_file: the progress callback asked to stop */
} qtl_status;

typedef enum qtl_method {
  QTL_METHOD_RTN = 0,         /* round to nearest on the min-max grid of each group */
  QTL_METHOD_CLIP_SEARCH = 1, /* round to nearest, each group's range searched for the least error */
  QTL_METHOD_GPTQ = 2,        /* GPTQ (Hessian error feedback); needs activations or a Hessian */
  QTL_METHOD_AWQ = 3          /* AWQ scales + clip search, then RTN; needs activations or a Hessian */
} qtl_method;

typedef enum qtl_activations {
  QTL_ACTIVATIONS_FP32 = 0, /* exact fp32 activations */
  QTL_ACTIVATIONS_INT8 = 1  /* activations quantized to int8 per block of 32 (integer dot products) */
} qtl_activations;

/* Formats by name (qtl_quantize_options.format):
 *   "uniform2" "uniform3" "uniform4"             asymmetric uniform codes, fp16 scale + zero per group
 *   "uniform5" "uniform6" "uniform8"             (the same at 5, 6 and 8 bits)
 *   "nf4"                                        NF4 levels, fp16 scale per group
 *   "log2-2" "log2-3" "log2-4"                   signed powers of two, fp16 scale per group
 *   "ternary"                                    {-a, 0, a}, a = mean|w| of the group
 *   "q4_0" "q4_1" "q5_0" "q5_1" "q8_0" "iq4_nl" "tq1_0" "tq2_0"
 *                                                llama.cpp's block types (their fixed block size)
 *   "q2_K" "q3_K" "q4_K" "q5_K" "q6_K"           llama.cpp's K-quants (super-blocks of 256; RTN,
 *                                                CLIP_SEARCH or GPTQ, the grid fitted with diag(H)
 *                                                as importance as llama-quantize --imatrix does)
 */
typedef struct qtl_quantize_options {
  const char* format;            /* a name above; default "uniform4" */
  int group_size;                /* weights per group along a row; 0 = one group per row; default 32.
                                    GGUF types: 0 or their block size (32; 256 for tq1_0/tq2_0
                                    and the K-quants) */
  qtl_method method;             /* default QTL_METHOD_RTN */
  const float* activations;      /* GPTQ/AWQ: calibration inputs, [tokens x cols] row-major */
  size_t tokens;
  const double* hessian;         /* or the Hessian 2/n XᵀX, [cols x cols] row-major (symmetric) */
  double damp;                   /* GPTQ damping, a fraction of mean diag(H); default 0.01 */
  qtl_activations kernel_activations; /* how qtl_gemv/qtl_gemm treat activations; default FP32 */
  int threads;                   /* threads for the calibration; default 1 */
} qtl_quantize_options;

typedef struct qtl_matrix qtl_matrix;

/* The library's version, e.g. "0.1.0". */
QTL_C_EXPORT const char* qtl_version(void);
/* The kernel path the uniform kernels run on this CPU ("avx512vnni", "avx2", "portable", ...). */
QTL_C_EXPORT const char* qtl_kernel_path(void);
/* The message of this thread's last failed call ("" when none has failed). Valid until the
   thread's next failing call. */
QTL_C_EXPORT const char* qtl_last_error(void);

/* Fills o with the defaults above. */
QTL_C_EXPORT void qtl_quantize_options_init(qtl_quantize_options* o);

/* Quantizes weights [rows x cols] (row-major fp32) into *out (free with qtl_matrix_free). */
QTL_C_EXPORT qtl_status qtl_quantize(const float* weights, size_t rows, size_t cols,
                                     const qtl_quantize_options* options, qtl_matrix** out);

/* Shape, bits per weight as stored (codes, scales, zeros, tables, input scales) and the
   format's name; any output pointer may be NULL. */
QTL_C_EXPORT qtl_status qtl_matrix_info(const qtl_matrix* m, size_t* rows, size_t* cols,
                                        double* bits_per_weight, const char** format);

/* y[rows] = W_hat x[cols]. x must be finite. */
QTL_C_EXPORT qtl_status qtl_gemv(const qtl_matrix* m, const float* x, float* y, int threads);
/* Y = X W_hat^T: X is [tokens x cols] (row stride ldx >= cols), Y [tokens x rows] (ldy >= rows). */
QTL_C_EXPORT qtl_status qtl_gemm(const qtl_matrix* m, const float* x, size_t ldx, size_t tokens,
                                 float* y, size_t ldy, int threads);

/* Writes the serialized matrix into buffer (capacity bytes) and its size into *size. With
   buffer NULL (or capacity too small: QTL_ERROR_BUFFER_TOO_SMALL) only *size is set. */
QTL_C_EXPORT qtl_status qtl_serialize(const qtl_matrix* m, void* buffer, size_t capacity, size_t* size);
/* Reads a serialized matrix (any alignment) into *out. */
QTL_C_EXPORT qtl_status qtl_deserialize(const void* data, size_t size, qtl_matrix** out);

/* Frees a matrix; NULL is a no-op. */
QTL_C_EXPORT void qtl_matrix_free(qtl_matrix* m);

/* ---- whole models: the qtl-quantize program as one call ---------------------------------- */

/* Called with the fraction of the work done (0..1) and a line of progress; return 0 to go on,
   anything else to stop (qtl_quantize_model_file then returns QTL_ERROR_CANCELLED and leaves the
   output untouched). */
typedef int (*qtl_progress_fn)(double fraction, const char* message, void* user);

typedef struct qtl_model_options {
  const char* recipe;           /* "rtn", "rtn-imatrix", "gptq", "gptq-clip", "gptq-actorder",
                                   "awq-gptq", "quarot-gptq"; NULL: the best measured for the type */
  const char* calibration_text; /* stories separated by <|endoftext|> lines (every recipe but
                                   "rtn" calibrates on text) */
  int calib_first, calib_last;  /* which stories of it; default 0 and 249 */
  const char* tokenizer;        /* a llama2.c input's tokenizer; NULL: tok512.bin beside the input */
  int context;                  /* > 0: a GGUF input's context length, replacing the file's; default 0 */
  qtl_progress_fn progress;     /* may be NULL */
  void* user;                   /* passed to progress */
} qtl_model_options;

/* Fills o with the defaults above. */
QTL_C_EXPORT void qtl_model_options_init(qtl_model_options* o);

/* Quantizes a GGUF model or llama2.c checkpoint (`input`) into a GGUF file (`output`) of
   llama-quantize's file type `type` ("Q4_K_M", "Q4_0", "Q8_0", "IQ4_NL", "F16", ...), each
   tensor typed by llama-quantize's rules and calibrated block by block with the recipe; the
   file is written to a temporary name and renamed. bits_per_weight (may be NULL) receives the
   written 2-D tensors' bits per weight. */
QTL_C_EXPORT qtl_status qtl_quantize_model_file(const char* input, const char* output, const char* type,
                                                const qtl_model_options* options, double* bits_per_weight);

#ifdef __cplusplus
}
#endif

#endif /* QTL_C_QTL_H */

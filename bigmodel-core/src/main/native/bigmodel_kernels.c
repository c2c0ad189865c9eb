/*
 * bigmodel's CPU matmul kernels for weights stored in 16 bits or quantized per row (THUDM's int8 and int4 layouts):
 * y[m, n] = sum_k x[m, k] * W[n, k] (* scale[n]), x and y in float32, accumulated in float32 (int8/int4: x rounded
 * to int16 per 128 values and summed exactly in int32 first, see "int8 and int4 weights").
 *
 * Why: libtorch's kernels for these weights at one row of activations (a decode step) read the weights at a half to
 * a third of the memory's bandwidth on AVX-512 CPUs, and its int4 kernel needs a repacked weight. These read the
 * weights once, in place, in their stored layout (a mapped checkpoint stays mapped), on the OpenMP threads libtorch
 * itself uses (the same libgomp, so the two never fight over cores).
 *
 * Only AVX-512 (F, BW, VL, DQ) CPUs are served; bmk_level() says 0 elsewhere and the Java side keeps libtorch.
 * Inputs are checked on the Java side (io.github.bigmodel.core.kernel.NativeKernels); nothing here allocates more than
 * a few rows of scratch.
 */
#include <jni.h>
#include <errno.h>
#include <float.h>
#include <immintrin.h>
#include <omp.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

enum { FMT_BF16 = 0, FMT_FP16 = 1, FMT_INT8 = 2, FMT_INT4 = 3 };

#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c,fma")))
#define T512BF __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,f16c,fma")))

/* Rows of W one multi-row step decodes; columns per decoded chunk (8 x 512 floats = 16 KB, in L1). */
#define MR_ROWS 8
#define MR_CHUNK 512

/* What this CPU supports, detected once (every thread computes the same value, so a race is harmless). */
static int cached_level = -1;

static int detect_level(void) {
    __builtin_cpu_init();
    if (!(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
          && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")
          && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))) {
        return 0;
    }
    return __builtin_cpu_supports("avx512bf16") ? 2 : 1;
}

static int level(void) {
    int l = __atomic_load_n(&cached_level, __ATOMIC_RELAXED);
    if (l < 0) {
        l = detect_level();
        __atomic_store_n(&cached_level, l, __ATOMIC_RELAXED);
    }
    return l;
}

static inline float bf16_to_f(uint16_t h) {
    union { uint32_t u; float f; } v;
    v.u = (uint32_t) h << 16;
    return v.f;
}

T512 static inline float f16_to_f(uint16_t h) {
    return _cvtsh_ss(h);
}

/* The signed high (value 2j) and low (value 2j+1) nibbles of byte j of an int4 row. */
static inline int nib_hi(uint8_t b) { return ((int) (int8_t) b) >> 4; }
static inline int nib_lo(uint8_t b) { return ((int) (int8_t) (uint8_t) (b << 4)) >> 4; }

/* Value j of a bfloat16 or float16 row. */
static inline float scalar_weight(int fmt, const void *row, long j) {
    return fmt == FMT_BF16 ? bf16_to_f(((const uint16_t *) row)[j]) : f16_to_f(((const uint16_t *) row)[j]);
}

static inline long row_bytes(int fmt, long k) {
    return fmt == FMT_INT8 ? k : fmt == FMT_INT4 ? k / 2 : 2 * k;
}

/* ---------------------------------------------------------------- one row of activations (decode) */

/*
 * The rows a GEMV step computes together: four (float16: eight). Step t of rows [r0, r1) takes rows
 * r0 + t + i * q (i = 0..width-1, q = the range / width), so each walks one long straight run of memory (a
 * width-th of a GEMV_GROUP); a last, partial step takes the rows left over (its unused slots repeat its first row,
 * computed and dropped). Returns how many rows are real.
 * Why: four neighbouring rows made four streams one row long each (8 KiB in a 6B's bf16 weights, 2 KiB in int4),
 * too short for the hardware prefetch to reach speed. C harness, the 6B's layer shapes from memory, 2 threads,
 * GB/s before -> after (with GEMV_GROUP 32 -> 128): bf16 51-56 -> 63-73, fp16 37-44 -> 52-67, int8 38-42 -> 50-62,
 * int4 31-37 -> 44-57; a plain read of 4 streams per thread: 71-84. A row's arithmetic never depends on the rows
 * beside it, so results are the same bits as before.
 */
static inline long step_count(long r0, long r1, int width) {
    return (r1 - r0 + width - 1) / width;
}

static inline __attribute__((always_inline)) int step_rows(long r0, long r1, long t, int width, long *rows) {
    long q = (r1 - r0) / width;
    if (t < q) {
        for (int i = 0; i < width; i++) rows[i] = r0 + t + i * q;
        return width;
    }
    int nr = (int) (r1 - r0 - width * q);
    for (int i = 0; i < width; i++) rows[i] = r0 + width * q + (i < nr ? i : 0);
    return nr;
}

/* bfloat16 widened by a 16-bit shift (CPUs without AVX512_BF16). */
T512 static inline __m512 bf16_bits(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
T512 static inline __m512 widen_bf16(const uint16_t *p) {
    return bf16_bits(_mm256_loadu_si256((const __m256i *) p));
}

/*
 * bfloat16 with AVX512_BF16: x rounded to bfloat16 once per call (exact when the model runs in bfloat16, as its
 * activations then are bfloat16 values) and 32 products per instruction, each exact, summed in float32.
 *
 * A checkpoint's tensors start wherever its header happens to end (safetensors pads to 8 bytes), so a row's 64-byte
 * vectors usually straddle two cache lines; loaded as they stand, that cost this kernel a quarter of its rate (C
 * harness, 6B shapes from memory: 72-74 GB/s at 64-byte-aligned rows, 54-55 at 8 or 32 bytes off). When every row
 * starts at the same even offset in its line (`shift` bytes; rows a multiple of 64 bytes long), each line is loaded
 * once, aligned, and a row's vector is put together from two neighbouring lines by one permute: the same 32 values,
 * so the same arithmetic and the same bits wherever the weight lies.
 */
T512BF static inline __attribute__((always_inline)) void bf16dp_quads(const uint16_t *w, const uint16_t *xb,
        float *y, long r0, long r1, long k, int shift) {
    long body = k & ~31L;
    __m512i join = _mm512_setzero_si512();
    if (shift != 0) {
        uint16_t idx[32] __attribute__((aligned(64)));
        for (int i = 0; i < 32; i++) idx[i] = (uint16_t) (i + shift / 2); /* >= 32: from the next line */
        join = _mm512_load_si512(idx);
    }
    for (long t = 0, nq = step_count(r0, r1, 4); t < nq; t++) {
        long rows[4];
        int nr = step_rows(r0, r1, t, 4, rows);
        const uint16_t *w0 = w + rows[0] * k, *w1 = w + rows[1] * k, *w2 = w + rows[2] * k, *w3 = w + rows[3] * k;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        if (shift == 0) {
            for (long j = 0; j < body; j += 32) {
                __m512bh xv = (__m512bh) _mm512_loadu_si512(xb + j);
                a0 = _mm512_dpbf16_ps(a0, (__m512bh) _mm512_loadu_si512(w0 + j), xv);
                a1 = _mm512_dpbf16_ps(a1, (__m512bh) _mm512_loadu_si512(w1 + j), xv);
                a2 = _mm512_dpbf16_ps(a2, (__m512bh) _mm512_loadu_si512(w2 + j), xv);
                a3 = _mm512_dpbf16_ps(a3, (__m512bh) _mm512_loadu_si512(w3 + j), xv);
            }
        } else {
            /* the lines holding each row's start; a line that holds any byte of a row never crosses its page */
            const __m512i *l0 = (const __m512i *) ((const char *) w0 - shift);
            const __m512i *l1 = (const __m512i *) ((const char *) w1 - shift);
            const __m512i *l2 = (const __m512i *) ((const char *) w2 - shift);
            const __m512i *l3 = (const __m512i *) ((const char *) w3 - shift);
            __m512i p0 = _mm512_load_si512(l0), p1 = _mm512_load_si512(l1);
            __m512i p2 = _mm512_load_si512(l2), p3 = _mm512_load_si512(l3);
            for (long j = 0, line = 1; j < body; j += 32, line++) {
                __m512bh xv = (__m512bh) _mm512_loadu_si512(xb + j);
                __m512i n0 = _mm512_load_si512(l0 + line), n1 = _mm512_load_si512(l1 + line);
                __m512i n2 = _mm512_load_si512(l2 + line), n3 = _mm512_load_si512(l3 + line);
                a0 = _mm512_dpbf16_ps(a0, (__m512bh) _mm512_permutex2var_epi16(p0, join, n0), xv);
                a1 = _mm512_dpbf16_ps(a1, (__m512bh) _mm512_permutex2var_epi16(p1, join, n1), xv);
                a2 = _mm512_dpbf16_ps(a2, (__m512bh) _mm512_permutex2var_epi16(p2, join, n2), xv);
                a3 = _mm512_dpbf16_ps(a3, (__m512bh) _mm512_permutex2var_epi16(p3, join, n3), xv);
                p0 = n0; p1 = n1; p2 = n2; p3 = n3;
            }
        }
        float s[4] = {_mm512_reduce_add_ps(a0), _mm512_reduce_add_ps(a1), _mm512_reduce_add_ps(a2),
                      _mm512_reduce_add_ps(a3)};
        for (long j = body; j < k; j++) {
            float xj = bf16_to_f(xb[j]);
            s[0] += bf16_to_f(w0[j]) * xj;
            s[1] += bf16_to_f(w1[j]) * xj;
            s[2] += bf16_to_f(w2[j]) * xj;
            s[3] += bf16_to_f(w3[j]) * xj;
        }
        for (int i = 0; i < nr; i++) y[rows[i]] = s[i];
    }
}

T512BF static void gemv_bf16dp_rows(const uint16_t *w, const uint16_t *xb, float *y, long r0, long r1, long k) {
    int shift = (int) ((uintptr_t) w & 63);
    if (shift != 0 && shift % 2 == 0 && (2 * k) % 64 == 0) bf16dp_quads(w, xb, y, r0, r1, k, shift);
    else bf16dp_quads(w, xb, y, r0, r1, k, 0);
}

/* Sums of eight vectors, one per lane of the result; lane i depends on a[i] alone, in a fixed order. */
T512 static inline __m256 reduce8(const __m512 a[8]) {
    __m256 b[8];
    for (int i = 0; i < 8; i++) {
        b[i] = _mm256_add_ps(_mm512_castps512_ps256(a[i]),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a[i]), 1)));
    }
    __m256 t0 = _mm256_hadd_ps(b[0], b[1]), t1 = _mm256_hadd_ps(b[2], b[3]);
    __m256 t2 = _mm256_hadd_ps(b[4], b[5]), t3 = _mm256_hadd_ps(b[6], b[7]);
    __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

/*
 * The arithmetic every float16 product (and bfloat16's without AVX512_BF16) follows, one row of x or many, so that a
 * row's result never depends on how many rows came with it (a prompt in one piece or in chunks, or token by token):
 *   for each chunk of MR_CHUNK columns, in order: a = 0; a = fma(w16, x16, a) over the chunk's 16-wide vectors in
 *   order (the last one zero-padded); y += the lanes of a summed by reduce8; finally y *= scale.
 * Rows go eight at a time (step_rows), and each row's 32 values of a step come in one 64-byte load, widened half by
 * half (LOADW2; the same values, so the same bits as widening 16 at a time). Each step prefetches two lines of every
 * row (or the stream's next row): 512 bytes on into L1 and 4 KiB on into L2. Why: widening float16 (vcvtph2ps) keeps
 * the core busy (the old loop ran at about 58 GB/s per core even from L1 on Zen 4), so the loads a core keeps in
 * flight fall behind memory unless it asks early and in few instructions. The L2 prefetch keeps DRAM busy while the
 * core converts (C harness, 6B shards mapped in 2 MiB folios, 2 threads, variants interleaved: 36.9-43.3 ->
 * 44.8-46.8 GB/s; the fp16 checkpoint's decode medians 352 -> 283 ms/token). Eight rows with whole-line loads: 48.9
 * -> 55.5 GB/s (1.13x) in the rounds where memory ran fast, 39.3 -> 44.4 (1.09x) in middling ones, 1.02x in slow
 * ones (bf16's kernel 56.7 / 44.9 in the same rounds); four rows with whole-line loads 1.07x, eight loading 32 bytes
 * at a time 1.04x, two 32-byte loads per step 0.99x: the single load per line is what pays. 2 or 8 KiB for the L2
 * prefetch, or no L1 prefetch, measured the same. bf16's dot-product kernel loses 8% with these prefetches, so it
 * has none.
 */
#define CANON_GEMV(NAME, LOADW2, LOADW, LOADW_TAIL)                                                                \
    T512 static void NAME(const uint16_t *w, const float *scale, const float *x, float *y, long r0, long r1,       \
                          long k) {                                                                                \
        for (long t = 0, no = step_count(r0, r1, 8); t < no; t++) {                                                \
            long rows[8];                                                                                          \
            int nr = step_rows(r0, r1, t, 8, rows);                                                                \
            const uint16_t *p[8];                                                                                  \
            for (int i = 0; i < 8; i++) p[i] = w + rows[i] * k;                                                    \
            float s[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};                                         \
            for (long c = 0; c < k; c += MR_CHUNK) {                                                               \
                long len = k - c < MR_CHUNK ? k - c : MR_CHUNK;                                                    \
                long full32 = len & ~31L, full = len & ~15L;                                                       \
                __m512 a[8];                                                                                       \
                for (int i = 0; i < 8; i++) a[i] = _mm512_setzero_ps();                                            \
                for (long j = c; j < c + full32; j += 32) {                                                        \
                    __m512 x0 = _mm512_loadu_ps(x + j), x1 = _mm512_loadu_ps(x + j + 16);                          \
                    for (int i = 0; i < 8; i++) {                                                                  \
                        _mm_prefetch((const char *) (p[i] + j) + 512, _MM_HINT_T0);                                \
                        _mm_prefetch((const char *) (p[i] + j) + 4096, _MM_HINT_T1);                               \
                    }                                                                                              \
                    for (int i = 0; i < 8; i++) {                                                                  \
                        __m512 lo, hi;                                                                             \
                        LOADW2(p[i] + j, &lo, &hi);                                                                \
                        a[i] = _mm512_fmadd_ps(lo, x0, a[i]);                                                      \
                        a[i] = _mm512_fmadd_ps(hi, x1, a[i]);                                                      \
                    }                                                                                              \
                }                                                                                                  \
                if (full > full32) {                                                                               \
                    __m512 xv = _mm512_loadu_ps(x + c + full32);                                                   \
                    for (int i = 0; i < 8; i++) a[i] = _mm512_fmadd_ps(LOADW(p[i] + c + full32), xv, a[i]);        \
                }                                                                                                  \
                if (len > full) {                                                                                  \
                    __mmask16 m = (__mmask16) ((1u << (len - full)) - 1u);                                         \
                    __m512 xv = _mm512_maskz_loadu_ps(m, x + c + full);                                            \
                    for (int i = 0; i < 8; i++) a[i] = _mm512_fmadd_ps(LOADW_TAIL(p[i] + c + full, m), xv, a[i]);  \
                }                                                                                                  \
                float t8[8];                                                                                       \
                _mm256_storeu_ps(t8, reduce8(a));                                                                  \
                for (int i = 0; i < 8; i++) s[i] += t8[i];                                                         \
            }                                                                                                      \
            for (int i = 0; i < nr; i++) y[rows[i]] = scale != NULL ? s[i] * scale[rows[i]] : s[i];                \
        }                                                                                                          \
    }

/* 32 values from one 64-byte load, as two vectors of 16 in order; 16 values; the first bits of m of 16 values. */
T512 static inline void w_f16_32(const uint16_t *p, __m512 *lo, __m512 *hi) {
    __m512i d = _mm512_loadu_si512(p);
    *lo = _mm512_cvtph_ps(_mm512_castsi512_si256(d));
    *hi = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(d, 1));
}
T512 static inline __m512 w_f16(const uint16_t *p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *) p));
}
T512 static inline __m512 w_f16_tail(const uint16_t *p, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}
T512 static inline void w_bf16_32(const uint16_t *p, __m512 *lo, __m512 *hi) {
    __m512i d = _mm512_loadu_si512(p);
    *lo = bf16_bits(_mm512_castsi512_si256(d));
    *hi = bf16_bits(_mm512_extracti64x4_epi64(d, 1));
}
T512 static inline __m512 w_bf16_tail(const uint16_t *p, __mmask16 m) {
    return bf16_bits(_mm256_maskz_loadu_epi16(m, p));
}

CANON_GEMV(gemv_f16_rows, w_f16_32, w_f16, w_f16_tail)
CANON_GEMV(gemv_bf16_rows, w_bf16_32, widen_bf16, w_bf16_tail)

/*
 * int8 and int4 weights: x rounded to int16 per XQ_BLOCK values (step = the block's largest |x| / 32767, to nearest),
 * the products of a block summed exactly in int32 lanes, then scaled into float32.
 *
 * Why: widening every weight to float32 for an exact-x product left these kernels compute-bound at about half the
 * memory's bandwidth (C harness, 6B shapes, 2 threads: int8 30 and int4 21 GB/s while bfloat16 streams at ~50-60).
 * vpmaddwd multiplies 32 int16 pairs per instruction into 16 exact int32 sums; the weights widen to int16 with one
 * instruction (int8) or two in-lane shifts (int4). The cost: each x value moves by at most half a step, 1/65534 of its
 * block's largest |x| (2^-16 relative to the block), far below the weights' own rounding (int8: 1/254 of the row's
 * largest) and bfloat16 activations' 2^-9. (chatglm.cpp's q8_0 rounds x to int8 per 32 values: 2^-8.)
 * vpdpwssd (AVX512_VNNI) would fuse the add: 1.2x in L2, no faster from memory; not worth a second build of these.
 *
 * The arithmetic every int8/int4 product follows, one row of x or many (so a row's result never depends on the rows
 * beside it): for each chunk of MR_CHUNK columns, in order: a = 0; for each block of the chunk, c = the exact int32
 * lane sums of w * xq over its 32-wide vectors, a = fma(float(c), step[block], a); y += the lanes of a summed by
 * reduce8; finally y *= scale.
 * int4: a full block is 64 bytes, 32 little-endian 16-bit words of 4 values (word e holds values 4e..4e+3, 4e+2 in
 * its top nibble); vector q is nibble q from the top of every word, signed by an arithmetic shift: lane e holds value
 * 4e + I4_ORDER[q], and xq comes in the same order. A partial last block stays in natural order, zero-padded.
 */
#define XQ_BLOCK 128
#define CHUNK_BLOCKS (MR_CHUNK / XQ_BLOCK)
static const int I4_ORDER[4] = {2, 3, 0, 1};

/*
 * One row of x [k] as int16 [blocks * XQ_BLOCK] (zero past k; int4: full blocks in I4_ORDER) and one step per block.
 * A block holding a NaN or an infinity gets a NaN step: every output it reaches is NaN, never a finite guess.
 */
T512 static void quantize_x(int fmt, const float *x, long k, int16_t *xq, float *step) {
    long nb = (k + XQ_BLOCK - 1) / XQ_BLOCK;
    int16_t q[XQ_BLOCK] __attribute__((aligned(64)));
    for (long b = 0; b < nb; b++) {
        long j0 = b * XQ_BLOCK, n = k - j0 < XQ_BLOCK ? k - j0 : XQ_BLOCK;
        __m512 mx = _mm512_setzero_ps();
        __mmask16 bad = 0;
        for (long j = 0; j < n; j += 16) {
            __mmask16 m = n - j >= 16 ? (__mmask16) 0xFFFF : (__mmask16) ((1u << (n - j)) - 1u);
            __m512 v = _mm512_abs_ps(_mm512_maskz_loadu_ps(m, x + j0 + j));
            bad |= _mm512_cmp_ps_mask(v, _mm512_set1_ps(FLT_MAX), _CMP_NLE_UQ); /* NaN or infinite */
            mx = _mm512_max_ps(mx, v);
        }
        float amax = _mm512_reduce_max_ps(mx);
        float inv = bad || amax == 0.0f ? 0.0f : 32767.0f / amax;
        step[b] = bad ? NAN : amax / 32767.0f;
        for (long j = 0; j < XQ_BLOCK; j += 16) {
            __mmask16 m = j >= n ? 0 : n - j >= 16 ? (__mmask16) 0xFFFF : (__mmask16) ((1u << (n - j)) - 1u);
            __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + j0 + j), _mm512_set1_ps(inv));
            if (bad) v = _mm512_setzero_ps();
            __m512i r = _mm512_cvt_roundps_epi32(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            _mm256_store_si256((__m256i *) (q + j), _mm512_cvtsepi32_epi16(r));
        }
        int16_t *out = xq + j0;
        if (fmt == FMT_INT4 && n == XQ_BLOCK) {
            for (int v = 0; v < 4; v++) {
                for (int e = 0; e < 32; e++) out[32 * v + e] = q[4 * e + I4_ORDER[v]];
            }
        } else {
            memcpy(out, q, sizeof q);
        }
    }
}

/* Vector q (0..3) of a full int4 block's 32 words: the signed nibble q from the top of each 16-bit word. */
T512 static inline __m512i i4_vector(__m512i words, int q) {
    return _mm512_srai_epi16(_mm512_slli_epi16(words, 4 * q), 12);
}

/* A partial last block of a row (n < XQ_BLOCK values from value j0) as int16 in natural order, zero-padded. */
static void tail_block(int fmt, const uint8_t *row, long j0, long n, int16_t *out) {
    for (long l = 0; l < XQ_BLOCK; l++) {
        long j = j0 + l;
        out[l] = (int16_t) (l >= n ? 0 : fmt == FMT_INT8 ? ((const int8_t *) row)[j]
                                         : (j & 1 ? nib_lo(row[j / 2]) : nib_hi(row[j / 2])));
    }
}

/* c + the exact int32 pair sums of w * x (vpmaddwd's products of int8/int4 by int16 never saturate). */
T512 static inline __m512i dot16(__m512i c, __m512i w, __m512i x) {
    return _mm512_add_epi32(c, _mm512_madd_epi16(w, x));
}

/*
 * Rows [r0, r1) of W times one quantized x, four rows at a time (step_rows). int4 also prefetches each full
 * block's columns one row on (the same stream's next row, 2 KiB ahead in a 6B) into L1 and 2 KiB beyond that into L2:
 * int4 does the most work per byte; the L1 prefetch gained it 10-15% in the C harness, the L2 one 5-8% more (6B int4
 * shards mapped in 2 MiB folios, variants interleaved) and the int4 folder's decode 97-129 -> 92-101 ms/token (4 of 5
 * alternating pairs faster). For int8 both cost 2-10%, so int8 has none.
 */
T512 static inline __attribute__((always_inline)) void gemv_q_rows(int fmt, const uint8_t *w, const float *scale,
        const int16_t *xq, const float *step, float *y, long r0, long r1, long k) {
    long rb = row_bytes(fmt, k), full = k / XQ_BLOCK, nb = (k + XQ_BLOCK - 1) / XQ_BLOCK;
    long bb = fmt == FMT_INT8 ? XQ_BLOCK : XQ_BLOCK / 2; /* bytes of a full block */
    for (long t = 0, nq = step_count(r0, r1, 4); t < nq; t++) {
        long rows[4];
        int nr = step_rows(r0, r1, t, 4, rows);
        const uint8_t *p[4];
        for (int i = 0; i < 4; i++) p[i] = w + rows[i] * rb;
        float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (long c = 0; c < nb; c += CHUNK_BLOCKS) {
            long ce = c + CHUNK_BLOCKS < nb ? c + CHUNK_BLOCKS : nb;
            __m512 a[8];
            for (int i = 0; i < 8; i++) a[i] = _mm512_setzero_ps();
            for (long b = c; b < ce; b++) {
                const int16_t *xb = xq + b * XQ_BLOCK;
                __m512i acc[4];
                for (int i = 0; i < 4; i++) acc[i] = _mm512_setzero_si512();
                if (b < full) {
                    if (fmt == FMT_INT4) {
                        for (int i = 0; i < 4; i++) {
                            const char *ahead = (const char *) (p[i] + b * bb + rb);
                            for (long l = 0; l < bb; l += 64) {
                                _mm_prefetch(ahead + l, _MM_HINT_T0);
                                _mm_prefetch(ahead + l + 2048, _MM_HINT_T1);
                            }
                        }
                    }
                    if (fmt == FMT_INT8) {
                        for (int v = 0; v < 4; v++) {
                            __m512i xv = _mm512_loadu_si512(xb + 32 * v);
                            for (int i = 0; i < 4; i++) {
                                __m256i raw = _mm256_loadu_si256((const __m256i *) (p[i] + b * bb + 32 * v));
                                acc[i] = dot16(acc[i], _mm512_cvtepi8_epi16(raw), xv);
                            }
                        }
                    } else {
                        __m512i words[4];
                        for (int i = 0; i < 4; i++) words[i] = _mm512_loadu_si512(p[i] + b * bb);
                        for (int v = 0; v < 4; v++) {
                            __m512i xv = _mm512_loadu_si512(xb + 32 * v);
                            for (int i = 0; i < 4; i++) acc[i] = dot16(acc[i], i4_vector(words[i], v), xv);
                        }
                    }
                } else {
                    int16_t t[XQ_BLOCK] __attribute__((aligned(64)));
                    for (int i = 0; i < 4; i++) {
                        tail_block(fmt, p[i], b * XQ_BLOCK, k - b * XQ_BLOCK, t);
                        for (int v = 0; v < 4; v++) {
                            acc[i] = dot16(acc[i], _mm512_load_si512(t + 32 * v), _mm512_loadu_si512(xb + 32 * v));
                        }
                    }
                }
                __m512 sv = _mm512_set1_ps(step[b]);
                for (int i = 0; i < 4; i++) a[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[i]), sv, a[i]);
            }
            float t[8];
            _mm256_storeu_ps(t, reduce8(a));
            for (int i = 0; i < 4; i++) s[i] += t[i];
        }
        for (int i = 0; i < nr; i++) y[rows[i]] = s[i] * scale[rows[i]];
    }
}

T512 static void gemv_i8_rows(const uint8_t *w, const float *scale, const int16_t *xq, const float *step, float *y,
                              long r0, long r1, long k) {
    gemv_q_rows(FMT_INT8, w, scale, xq, step, y, r0, r1, k);
}

T512 static void gemv_i4_rows(const uint8_t *w, const float *scale, const int16_t *xq, const float *step, float *y,
                              long r0, long r1, long k) {
    gemv_q_rows(FMT_INT4, w, scale, xq, step, y, r0, r1, k);
}

/* x's rows quantized for the int8/int4 kernels: xq [m][blocks * XQ_BLOCK], step [m][blocks]; NULL xq when out of memory. */
typedef struct { int16_t *xq; float *step; long blocks; } quantized_x;

static quantized_x quantize_rows(int fmt, const float *x, long m, long k) {
    quantized_x q = {NULL, NULL, (k + XQ_BLOCK - 1) / XQ_BLOCK};
    q.xq = aligned_alloc(64, sizeof(int16_t) * (size_t) (m * q.blocks * XQ_BLOCK));
    q.step = malloc(sizeof(float) * (size_t) (m * q.blocks));
    if (q.xq == NULL || q.step == NULL) {
        free(q.xq);
        free(q.step);
        q.xq = NULL;
        q.step = NULL;
        return q;
    }
    for (long r = 0; r < m; r++) quantize_x(fmt, x + r * k, k, q.xq + r * q.blocks * XQ_BLOCK, q.step + r * q.blocks);
    return q;
}

/* The bfloat16 value nearest to f (ties to even), NaN kept a NaN. */
static inline uint16_t f_to_bf16(float f) {
    union { float f; uint32_t u; } v = {f};
    if ((v.u & 0x7F800000u) == 0x7F800000u && (v.u & 0x7FFFFFu)) return (uint16_t) ((v.u >> 16) | 0x40u);
    return (uint16_t) ((v.u + 0x7FFFu + ((v.u >> 16) & 1u)) >> 16);
}

/* Rows per unit of work of a GEMV (a step's rows lie a width-th of the run apart: step_rows). */
#define GEMV_GROUP 128

/*
 * One row of activations as a GEMV's kernel reads it: x in float32, x rounded to bfloat16 (xb, the AVX512_BF16
 * kernel's), or x quantized to int16 blocks (q, int8/int4). Made once per call by gemv_prepare, read by every thread.
 */
typedef struct { const float *x; const uint16_t *xb; quantized_x q; void *scratch; } gemv_input;

/* xb: x already in bfloat16 (a bf16 model's activations), or NULL to round x here when the kernel wants it. */
static int gemv_prepare(int fmt, int lvl, const float *x, const uint16_t *xb, long k, gemv_input *in) {
    in->x = x;
    in->xb = xb;
    in->q = (quantized_x) {NULL, NULL, 0};
    in->scratch = NULL;
    if (fmt == FMT_BF16 && lvl >= 2 && xb == NULL) {
        in->scratch = aligned_alloc(64, ((size_t) k * 2 + 63) / 64 * 64);
        if (in->scratch == NULL) return ENOMEM;
        uint16_t *rounded = in->scratch;
        for (long j = 0; j < k; j++) rounded[j] = f_to_bf16(x[j]);
        in->xb = rounded;
    } else if (fmt == FMT_INT8 || fmt == FMT_INT4) {
        in->q = quantize_rows(fmt, x, 1, k);
        if (in->q.xq == NULL) return ENOMEM;
    }
    return 0;
}

static void gemv_release(gemv_input *in) {
    free(in->scratch);
    free(in->q.xq);
    free(in->q.step);
    in->scratch = NULL;
    in->q.xq = NULL;
    in->q.step = NULL;
}

/* Rows [r0, r1) of y = W x: the same arithmetic for a row whichever thread or call computes it. */
static void gemv_rows(int fmt, int lvl, const void *w, const float *scale, const gemv_input *in, float *y, long r0,
                      long r1, long k) {
    switch (fmt) {
        case FMT_BF16:
            if (lvl >= 2) gemv_bf16dp_rows(w, in->xb, y, r0, r1, k);
            else gemv_bf16_rows(w, NULL, in->x, y, r0, r1, k);
            break;
        case FMT_FP16: gemv_f16_rows(w, NULL, in->x, y, r0, r1, k); break;
        case FMT_INT8: gemv_i8_rows(w, scale, in->q.xq, in->q.step, y, r0, r1, k); break;
        default: gemv_i4_rows(w, scale, in->q.xq, in->q.step, y, r0, r1, k); break;
    }
}

/*
 * Rows are handed out in small runs as threads ask (dynamic), not one fixed share per thread: with fixed shares each
 * thread spent about 11% of a 6B decode step waiting for the other at the end of a call (a thread that starts late,
 * e.g. woken from sleep, finishes late). A run is GEMV_GROUP rows, so every row is computed the same way whoever takes
 * it; 128 rows make each of four streams 32 rows long (32 fared worse, 256-1024 no better, and fewer runs
 * balance the threads less well), each of float16's eight 16. Called by every thread of a parallel region (an orphaned
 * worksharing loop).
 */
static void gemv_shared(int fmt, int lvl, const void *w, const float *scale, const gemv_input *in, float *y, long n,
                        long k) {
    long groups = (n + GEMV_GROUP - 1) / GEMV_GROUP;
#pragma omp for schedule(dynamic)
    for (long g = 0; g < groups; g++) {
        long r0 = g * GEMV_GROUP, r1 = r0 + GEMV_GROUP < n ? r0 + GEMV_GROUP : n;
        gemv_rows(fmt, lvl, w, scale, in, y, r0, r1, k);
    }
}

static int gemv(int fmt, int lvl, const void *w, const float *scale, const float *x, const uint16_t *xb, float *y,
                long n, long k, int threads) {
    gemv_input in;
    int rc = gemv_prepare(fmt, lvl, x, xb, k, &in);
    if (rc != 0) return rc;
#pragma omp parallel num_threads(threads)
    gemv_shared(fmt, lvl, w, scale, &in, y, n, k);
    gemv_release(&in);
    return 0;
}

/* ---------------------------------------------------------------- several rows of activations (prompts) */

/*
 * Rows [r, r + nr) of a bfloat16/float16 W, columns [c, c + len), as float32 into buf[MR_ROWS][MR_CHUNK]; missing
 * rows are zero. Each row's next chunk is prefetched into L2 as this one is widened, so that it arrives while the
 * rows of x are multiplied. Why: the widening waited on memory for a third of a 16-row GEMM's time (perf, C harness);
 * with the prefetch, 16-row fp16 GEMMs ran 1.09-1.11x (k = 4096) and 1.28-1.29x (k = 13696) as fast, 4-row ones
 * 1.2-1.4x, 64 rows 1.01-1.08x, 512 rows the same (two harnesses, 2 threads, same bits). An L1 prefetch gained half
 * as much. int8/int4 widening the same way (gemm_q_rows) measured 0.94-1.17x, no steady gain: not there.
 */
T512 static void decode_chunk(int fmt, const void *w, long k, long r, int nr, long c, long len, float *buf) {
    long rb = row_bytes(fmt, k);
    long ahead = c + MR_CHUNK < k ? k - c - MR_CHUNK : 0; /* values of the next chunk that lie in the row */
    for (int i = 0; i < MR_ROWS; i++) {
        float *dst = buf + (long) i * MR_CHUNK;
        if (i >= nr) {
            memset(dst, 0, sizeof(float) * MR_CHUNK);
            continue;
        }
        const uint8_t *row = (const uint8_t *) w + (r + i) * rb;
        const uint16_t *cur = (const uint16_t *) row + c;
        long j = 0;
        for (; j + 16 <= len; j += 16) {
            if (j % 32 == 0 && j < ahead) _mm_prefetch((const char *) (cur + MR_CHUNK + j), _MM_HINT_T1);
            _mm512_storeu_ps(dst + j, fmt == FMT_BF16 ? widen_bf16(cur + j) : w_f16(cur + j));
        }
        for (; j < len; j++) dst[j] = scalar_weight(fmt, row, c + j);
        for (long p = len; p < ((len + 15) & ~15L); p++) dst[p] = 0.0f;
    }
}

/*
 * A block of 8 rows of W is decoded chunk by chunk into L1 once and multiplied into every row of x, so W is read once
 * however many rows x has. The running sums of the block's outputs live in `sums` [m][MR_ROWS] (the thread's own,
 * contiguous) and reach y once, scaled, at the end: y's rows are n floats apart, and updating y in place per chunk
 * made every row's update alias the previous row's in the low 12 address bits (4K aliasing, a third of the time).
 */
T512 static void gemm_rows(int fmt, const void *w, const float *scale, const float *x, float *y, float *sums, long m,
                           long n, long k, long r0, long r1) {
    float buf[MR_ROWS * MR_CHUNK] __attribute__((aligned(64)));
    for (long r = r0; r < r1; r += MR_ROWS) {
        int nr = (int) (r1 - r < MR_ROWS ? r1 - r : MR_ROWS);
        memset(sums, 0, sizeof(float) * (size_t) (m * MR_ROWS));
        for (long c = 0; c < k; c += MR_CHUNK) {
            long len = k - c < MR_CHUNK ? k - c : MR_CHUNK;
            decode_chunk(fmt, w, k, r, nr, c, len, buf);
            long full = len & ~15L;
            __mmask16 tail = (__mmask16) ((1u << (len - full)) - 1u);
            for (long mm = 0; mm < m; mm++) {
                const float *xm = x + mm * k + c;
                __m512 a[MR_ROWS];
                for (int i = 0; i < MR_ROWS; i++) a[i] = _mm512_setzero_ps();
                for (long j = 0; j < full; j += 16) {
                    __m512 xv = _mm512_loadu_ps(xm + j);
                    for (int i = 0; i < MR_ROWS; i++) a[i] = _mm512_fmadd_ps(_mm512_load_ps(buf + i * MR_CHUNK + j), xv, a[i]);
                }
                if (tail) {
                    __m512 xv = _mm512_maskz_loadu_ps(tail, xm + full);
                    for (int i = 0; i < MR_ROWS; i++) {
                        a[i] = _mm512_fmadd_ps(_mm512_load_ps(buf + i * MR_CHUNK + full), xv, a[i]);
                    }
                }
                float *sm = sums + mm * MR_ROWS;
                _mm256_store_ps(sm, _mm256_add_ps(_mm256_load_ps(sm), reduce8(a)));
            }
        }
        for (long mm = 0; mm < m; mm++) {
            for (int i = 0; i < nr; i++) {
                float v = sums[mm * MR_ROWS + i];
                y[mm * n + r + i] = scale != NULL ? v * scale[r + i] : v;
            }
        }
    }
}

/*
 * int8/int4 rows [r0, r1) of W times every quantized row of x, MR_ROWS weight rows at a time: a chunk of them is
 * widened to int16 into L1 once (in the order gemv_q_rows reads it) and multiplied into every row of x.
 */
T512 static void gemm_q_rows(int fmt, const uint8_t *w, const float *scale, const quantized_x *q, float *y,
                             float *sums, long m, long n, long k, long r0, long r1) {
    int16_t buf[MR_ROWS * MR_CHUNK] __attribute__((aligned(64)));
    long rb = row_bytes(fmt, k), full = k / XQ_BLOCK, nb = q->blocks;
    long bb = fmt == FMT_INT8 ? XQ_BLOCK : XQ_BLOCK / 2;
    for (long r = r0; r < r1; r += MR_ROWS) {
        int nr = (int) (r1 - r < MR_ROWS ? r1 - r : MR_ROWS);
        memset(sums, 0, sizeof(float) * (size_t) (m * MR_ROWS));
        for (long c = 0; c < nb; c += CHUNK_BLOCKS) {
            long ce = c + CHUNK_BLOCKS < nb ? c + CHUNK_BLOCKS : nb;
            for (int i = 0; i < MR_ROWS; i++) {
                const uint8_t *row = w + (r + (i < nr ? i : 0)) * rb;
                for (long b = c; b < ce; b++) {
                    int16_t *dst = buf + (long) i * MR_CHUNK + (b - c) * XQ_BLOCK;
                    if (b >= full) {
                        tail_block(fmt, row, b * XQ_BLOCK, k - b * XQ_BLOCK, dst);
                    } else if (fmt == FMT_INT8) {
                        for (int v = 0; v < 4; v++) {
                            __m256i raw = _mm256_loadu_si256((const __m256i *) (row + b * bb + 32 * v));
                            _mm512_store_si512(dst + 32 * v, _mm512_cvtepi8_epi16(raw));
                        }
                    } else {
                        __m512i words = _mm512_loadu_si512(row + b * bb);
                        for (int v = 0; v < 4; v++) _mm512_store_si512(dst + 32 * v, i4_vector(words, v));
                    }
                }
            }
            for (long mm = 0; mm < m; mm++) {
                const int16_t *xm = q->xq + mm * nb * XQ_BLOCK;
                const float *st = q->step + mm * nb;
                __m512 a[MR_ROWS];
                for (int i = 0; i < MR_ROWS; i++) a[i] = _mm512_setzero_ps();
                for (long b = c; b < ce; b++) {
                    __m512i acc[MR_ROWS];
                    for (int i = 0; i < MR_ROWS; i++) acc[i] = _mm512_setzero_si512();
                    for (int v = 0; v < 4; v++) {
                        __m512i xv = _mm512_load_si512(xm + b * XQ_BLOCK + 32 * v);
                        const int16_t *col = buf + (b - c) * XQ_BLOCK + 32 * v;
                        for (int i = 0; i < MR_ROWS; i++) acc[i] = dot16(acc[i], _mm512_load_si512(col + i * MR_CHUNK), xv);
                    }
                    __m512 sv = _mm512_set1_ps(st[b]);
                    for (int i = 0; i < MR_ROWS; i++) a[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[i]), sv, a[i]);
                }
                float *sm = sums + mm * MR_ROWS;
                _mm256_store_ps(sm, _mm256_add_ps(_mm256_load_ps(sm), reduce8(a)));
            }
        }
        for (long mm = 0; mm < m; mm++) {
            for (int i = 0; i < nr; i++) y[mm * n + r + i] = sums[mm * MR_ROWS + i] * scale[r + i];
        }
    }
}

static int gemm(int fmt, const void *w, const float *scale, const float *x, float *y, long m, long n, long k,
                int threads) {
    int quantized = fmt == FMT_INT8 || fmt == FMT_INT4;
    quantized_x q = {NULL, NULL, 0};
    if (quantized) {
        q = quantize_rows(fmt, x, m, k);
        if (q.xq == NULL) return ENOMEM;
    }
    /* blocks of MR_ROWS weight rows as threads ask, as in gemv: neither thread waits long for the other */
    long blocks = (n + MR_ROWS - 1) / MR_ROWS;
    size_t sums_bytes = (sizeof(float) * (size_t) (m * MR_ROWS) + 63) / 64 * 64;
    int rc = 0;
#pragma omp parallel num_threads(threads)
    {
        float *sums = aligned_alloc(64, sums_bytes);
        if (sums == NULL) {
#pragma omp atomic write
            rc = ENOMEM;
        }
        /* every thread meets the loop; one without scratch leaves its blocks, and the call reports ENOMEM */
#pragma omp for schedule(dynamic)
        for (long b = 0; b < blocks; b++) {
            long r1 = (b + 1) * MR_ROWS < n ? (b + 1) * MR_ROWS : n;
            if (sums == NULL) continue;
            if (quantized) gemm_q_rows(fmt, w, scale, &q, y, sums, m, n, k, b * MR_ROWS, r1);
            else gemm_rows(fmt, w, scale, x, y, sums, m, n, k, b * MR_ROWS, r1);
        }
        free(sums);
    }
    free(q.xq);
    free(q.step);
    return rc;
}

/* ---------------------------------------------------------------- JNI */

JNIEXPORT jint JNICALL Java_io_github_bigmodel_core_kernel_NativeKernels_level(JNIEnv *env, jclass cls) {
    (void) env;
    (void) cls;
    return level();
}

/* Activation and output dtypes, as the Java side passes them. */
enum { DT_F32 = 0, DT_BF16 = 1, DT_F16 = 2 };

T512 static void to_float(int type, const void *src, float *dst, long count) {
    const uint16_t *h = src;
    long i = 0;
    if (type == DT_BF16) {
        for (; i + 16 <= count; i += 16) _mm512_storeu_ps(dst + i, widen_bf16(h + i));
        for (; i < count; i++) dst[i] = bf16_to_f(h[i]);
    } else {
        for (; i + 16 <= count; i += 16) _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *) (h + i))));
        for (; i < count; i++) dst[i] = f16_to_f(h[i]);
    }
}

/* f_to_bf16 of 16 values at once: the same integer rounding (ties to even, NaN kept a quiet NaN), bit for bit. */
T512 static inline __m256i f_to_bf16_16(__m512 f) {
    __m512i u = _mm512_castps_si512(f);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7FFF)), lsb), 16);
    __m512i q = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
    r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(f, f, _CMP_UNORD_Q), q);
    return _mm512_cvtepi32_epi16(r);
}

T512 static void from_float(int type, const float *src, void *dst, long count) {
    uint16_t *h = dst;
    long i = 0;
    if (type == DT_BF16) {
        /* 0.09 instead of 0.5 ns a value (a 512-token int8 prompt converts some 575 M outputs) */
        for (; i + 16 <= count; i += 16) _mm256_storeu_si256((__m256i *) (h + i), f_to_bf16_16(_mm512_loadu_ps(src + i)));
        for (; i < count; i++) h[i] = f_to_bf16(src[i]);
    } else {
        for (; i + 16 <= count; i += 16) {
            _mm256_storeu_si256((__m256i *) (h + i), _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
        }
        for (; i < count; i++) h[i] = _cvtss_sh(src[i], _MM_FROUND_TO_NEAREST_INT);
    }
}

/*
 * y [m, n] (ytype) = x [m, k] (xtype) times W^T, scaled per row of W for int8/int4. Conversions of x and y happen
 * here, once, around the float32 kernels: a layer makes no extra tensors for them.
 */
JNIEXPORT jint JNICALL Java_io_github_bigmodel_core_kernel_NativeKernels_mm0(JNIEnv *env, jclass cls, jint fmt,
        jlong w, jlong scale, jlong x, jint xtype, jlong y, jint ytype, jlong m, jlong n, jlong k, jint threads) {
    (void) env;
    (void) cls;
    int lvl = level();
    if (lvl == 0) return -1;
    if (threads < 1) threads = 1;
    if (m <= 0) return 0; /* no rows: nothing to compute (and no zero-byte scratch to allocate) */
    const void *wp = (const void *) (intptr_t) w;
    const float *sp = (const float *) (intptr_t) scale;
    const void *xp = (const void *) (intptr_t) x;
    void *yp = (void *) (intptr_t) y;
    /* a bf16 model's activations feed the bf16 kernel as they are */
    int direct_bf16 = m == 1 && fmt == FMT_BF16 && lvl >= 2 && xtype == DT_BF16;
    float *xf = NULL, *yf = NULL;
    if (xtype != DT_F32 && !direct_bf16) {
        xf = malloc(sizeof(float) * (size_t) (m * k));
        if (xf == NULL) return ENOMEM;
        to_float(xtype, xp, xf, m * k);
    }
    if (ytype != DT_F32) {
        yf = malloc(sizeof(float) * (size_t) (m * n));
        if (yf == NULL) {
            free(xf);
            return ENOMEM;
        }
    }
    const float *xs = xf != NULL ? xf : (const float *) xp;
    float *ys = yf != NULL ? yf : (float *) yp;
    int rc = 0;
    if (m == 1) {
        rc = gemv(fmt, lvl, wp, sp, direct_bf16 ? NULL : xs, direct_bf16 ? (const uint16_t *) xp : NULL, ys, n, k,
                  threads);
    } else {
        rc = gemm(fmt, wp, sp, xs, ys, m, n, k, threads);
    }
    if (rc == 0 && yf != NULL) from_float(ytype, yf, yp, m * n);
    free(xf);
    free(yf);
    return rc;
}

/*
 * Asks the kernel to back [address, address + length) with 2 MiB pages where it can (MADV_HUGEPAGE): for a mapped
 * checkpoint not yet in the page cache, pages then come in as 2 MiB folios mapped by one TLB entry each. Only the
 * 2 MiB-aligned middle of the range is advised. Returns 0 or an errno value.
 */
JNIEXPORT jint JNICALL Java_io_github_bigmodel_core_kernel_NativeKernels_adviseHugePages0(JNIEnv *env, jclass cls,
        jlong address, jlong length) {
    (void) env;
    (void) cls;
    const uintptr_t huge = 2u << 20;
    uintptr_t start = ((uintptr_t) address + huge - 1) & ~(huge - 1);
    uintptr_t end = ((uintptr_t) address + (uintptr_t) length) & ~(huge - 1);
    if (end <= start) return 0;
#ifdef MADV_HUGEPAGE
    if (madvise((void *) start, end - start, MADV_HUGEPAGE) != 0) return errno;
    return 0;
#else
    return ENOSYS;
#endif
}

/*
 * Why: copying a weight out of a mapped checkpoint page-faults on every 4 KiB page it reads (fault-around maps a few
 * more), and in a virtual machine each fault is a trip through the hypervisor: the fault handling cost more than
 * the copy. MADV_POPULATE_READ (Linux 5.14) maps the whole range in one call, reading what is not cached. Returns 0
 * or an errno value (EINVAL on kernels without it: the copy then faults as before).
 */
JNIEXPORT jint JNICALL Java_io_github_bigmodel_core_kernel_NativeKernels_populate0(JNIEnv *env, jclass cls,
        jlong address, jlong length) {
    (void) env;
    (void) cls;
    const uintptr_t page = 4096;
    uintptr_t start = (uintptr_t) address & ~(page - 1);
    uintptr_t end = ((uintptr_t) address + (uintptr_t) length + page - 1) & ~(page - 1);
    if (end <= start) return 0;
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
    if (madvise((void *) start, end - start, MADV_POPULATE_READ) != 0) return errno;
    return 0;
}

/* ---------------------------------------------------------------- a layer's small ops (io.github.bigmodel.core.kernel.NativeOps) */
/*
 * Why: a decode step runs, per layer, some 80 small libtorch operations besides its matmuls (norm, rotary, attention
 * over the cache, gating), each a dispatch, an allocation and a Java handle: about 0.7 ms per layer whatever the
 * model's width, while the other thread waits. These do each group of them in one call, with the rounding the
 * operation-by-operation form has (every intermediate a libtorch operation would round to the tensor's dtype is
 * rounded here too), so results match it to the last bit or within one rounding of a float32 sum.
 */

/* 16 values of a float32 / bfloat16 / float16 array from index i, lanes past n zero. */
T512 static inline __m512 load16(int type, const void *p, long i, long n) {
    __mmask16 m = n - i >= 16 ? (__mmask16) 0xFFFF : (__mmask16) ((1u << (n - i)) - 1u);
    if (type == DT_F32) return _mm512_maskz_loadu_ps(m, (const float *) p + i);
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *) p + i);
    if (type == DT_BF16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    return _mm512_cvtph_ps(h);
}

/* f as a value of the dtype: rounded to nearest (ties to even) for the half types. */
T512 static inline float round_to(int type, float f) {
    if (type == DT_BF16) return bf16_to_f(f_to_bf16(f));
    if (type == DT_F16) return _cvtsh_ss(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
    return f;
}

T512 static inline float load1(int type, const void *p, long i) {
    if (type == DT_F32) return ((const float *) p)[i];
    if (type == DT_BF16) return bf16_to_f(((const uint16_t *) p)[i]);
    return f16_to_f(((const uint16_t *) p)[i]);
}

T512 static inline void store1(int type, void *p, long i, float f) {
    if (type == DT_F32) ((float *) p)[i] = f;
    else if (type == DT_BF16) ((uint16_t *) p)[i] = f_to_bf16(f);
    else ((uint16_t *) p)[i] = _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
}

/*
 * e^x for 16 lanes, within 2 ulp (Cephes' polynomial on [-ln2/2, ln2/2], 2^n by vscalefps); -inf and large negative
 * x give 0, large x +inf, NaN stays NaN.
 */
T512 static inline __m512 exp16(__m512 x) {
    x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x); /* x NaN: max returns its second operand, the NaN */
    x = _mm512_min_ps(_mm512_set1_ps(89.0f), x);
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    __m512 y = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(y, n);
}

T512 static inline float exp1(float x) {
    float out[16];
    _mm512_storeu_ps(out, exp16(_mm512_set1_ps(x)));
    return out[0];
}

/* The rows worth a parallel region: below this many values one thread is faster than waking another. */
#define PAR_MIN 32768

/*
 * RMSNorm as ChatGLM2/3 computes it: per row, r = 1 / sqrt(mean(x^2) + eps) in float32, y = w * (x * r) rounded
 * once to the dtype. x, y [rows, width] in xtype (y may be x); w [width] in wtype.
 */
T512 static void rms_rows(int xt, const void *x, int wt, const void *w, void *y, long r0, long r1, long width,
                          float eps) {
    for (long r = r0; r < r1; r++) {
        const char *xr = (const char *) x + (size_t) (r * width) * (xt == DT_F32 ? 4 : 2);
        char *yr = (char *) y + (size_t) (r * width) * (xt == DT_F32 ? 4 : 2);
        __m512 acc = _mm512_setzero_ps();
        for (long i = 0; i < width; i += 16) {
            __m512 v = load16(xt, xr, i, width);
            acc = _mm512_fmadd_ps(v, v, acc);
        }
        float mean = _mm512_reduce_add_ps(acc) / (float) width;
        float inv = 1.0f / _mm_cvtss_f32(_mm_sqrt_ss(_mm_set_ss(mean + eps)));
        for (long i = 0; i < width; i++) store1(xt, yr, i, load1(wt, w, i) * (load1(xt, xr, i) * inv));
    }
}

JNIEXPORT jint JNICALL Java_io_github_bigmodel_core_kernel_NativeOps_rmsNorm0(JNIEnv *env, jclass cls, jlong x,
        jint xtype, jlong w, jint wtype, jlong y, jlong rows, jlong width, jfloat eps, jint threads) {
    (void) env;
    (void) cls;
    if (level() == 0) return -1;
    const void *xp = (const void *) (intptr_t) x, *wp = (const void *) (intptr_t) w;
    void *yp = (void *) (intptr_t) y;
    if (rows * width < PAR_MIN || threads <= 1 || rows == 1) {
        rms_rows(xtype, xp, wtype, wp, yp, 0, rows, width, eps);
        return 0;
    }
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long r = 0; r < rows; r++) rms_rows(xtype, xp, wtype, wp, yp, r, r + 1, width, eps);
    return 0;
}

/*
 * Interleaved rotary, in place, on the first `rot` values of each of `heads` heads of `headDim` values in every row:
 * pairs (x0, x1) become (x0 c - x1 s, x1 c + x0 s), each product and the sum rounded to the dtype as libtorch's
 * elementwise operations on that dtype would. cos/sin: [rows, rot/2] in ctype.
 */
T512 static void rotary_rows(int type, void *x, long rows, long rowStride, long heads, long headDim, long rot,
                             const void *cosp, const void *sinp, int ctype) {
    size_t es = type == DT_F32 ? 4 : 2;
    long half = rot / 2;
    for (long r = 0; r < rows; r++) {
        char *row = (char *) x + (size_t) (r * rowStride) * es;
        const void *c = (const char *) cosp + (size_t) (r * half) * (ctype == DT_F32 ? 4 : 2);
        const void *s = (const char *) sinp + (size_t) (r * half) * (ctype == DT_F32 ? 4 : 2);
        for (long h = 0; h < heads; h++) {
            char *p = row + (size_t) (h * headDim) * es;
            for (long i = 0; i < half; i++) {
                float x0 = load1(type, p, 2 * i), x1 = load1(type, p, 2 * i + 1);
                float ci = load1(ctype, c, i), si = load1(ctype, s, i);
                float o0 = round_to(type, round_to(type, x0 * ci) - round_to(type, x1 * si));
                float o1 = round_to(type, round_to(type, x1 * ci) + round_to(type, x0 * si));
                store1(type, p, 2 * i, o0);
                store1(type, p, 2 * i + 1, o1);
            }
        }
    }
}

JNIEXPORT jint JNICALL Java_io_github_bigmodel_core_kernel_NativeOps_rotary0(JNIEnv *env, jclass cls, jlong x,
        jint type, jlong rows, jlong rowStride, jlong heads, jlong headDim, jlong rot, jlong cosp, jlong sinp,
        jint ctype) {
    (void) env;
    (void) cls;
    if (level() == 0) return -1;
    rotary_rows(type, (void *) (intptr_t) x, rows, rowStride, heads, headDim, rot, (const void *) (intptr_t) cosp,
                (const void *) (intptr_t) sinp, ctype);
    return 0;
}

/*
 * silu(a) * b for the two halves of each row of up [rows, 2 ffn]: silu rounded to the dtype, then the product.
 * out [rows, ffn].
 */
T512 static void swiglu_rows(int type, const void *up, void *out, long r0, long r1, long ffn) {
    size_t es = type == DT_F32 ? 4 : 2;
    float a[16], b[16];
    for (long r = r0; r < r1; r++) {
        const char *ar = (const char *) up + (size_t) (r * 2 * ffn) * es, *br = ar + (size_t) ffn * es;
        char *o = (char *) out + (size_t) (r * ffn) * es;
        for (long i = 0; i < ffn; i += 16) {
            __m512 av = load16(type, ar, i, ffn);
            __m512 sv = _mm512_div_ps(av, _mm512_add_ps(_mm512_set1_ps(1.0f), exp16(_mm512_sub_ps(_mm512_setzero_ps(), av))));
            _mm512_storeu_ps(a, sv);
            _mm512_storeu_ps(b, load16(type, br, i, ffn));
            long n = ffn - i < 16 ? ffn - i : 16;
            for (long l = 0; l < n; l++) store1(type, o, i + l, round_to(type, a[l]) * b[l]);
        }
    }
}

JNIEXPORT jint JNICALL Java_io_github_bigmodel_core_kernel_NativeOps_swiglu0(JNIEnv *env, jclass cls, jlong up,
        jint type, jlong out, jlong rows, jlong ffn, jint threads) {
    (void) env;
    (void) cls;
    if (level() == 0) return -1;
    const void *u = (const void *) (intptr_t) up;
    void *o = (void *) (intptr_t) out;
    if (rows * ffn < PAR_MIN || threads <= 1 || rows == 1) {
        swiglu_rows(type, u, o, 0, rows, ffn);
        return 0;
    }
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long r = 0; r < rows; r++) swiglu_rows(type, u, o, r, r + 1, ffn);
    return 0;
}

/*
 * Attention of one query position per batch row against T cached positions, with `groups` key/value heads shared
 * by heads/groups query heads each (multi-query / grouped-query):
 *   s_t = round(round(q . k_t) * pre) * post, masked to -inf where mask[b, t] != 0, p = softmax(s) in float32,
 *   rounded to the dtype, out = round(sum_t p_t v_t).
 * q: row b at q + b * qBatch, head h at + h * headDim. k/v: position t, row b, group g at
 * + t * kvPos + b * kvBatch + g * headDim. out [batch, heads * headDim]. Heads of one group are done together, so a
 * key or value vector is read once per group, not once per head.
 */
typedef struct {
    int type;
    const void *q, *k, *v;
    const uint8_t *mask;
    void *out;
    long qBatch, kvPos, kvBatch, keys, batch, heads, groups, dim;
    float pre, post;
} attend_args;

T512 static void attend_run(const attend_args *a, long b, long h0, long h1, float *scores, float *acc) {
    int t = a->type;
    size_t es = t == DT_F32 ? 4 : 2;
    long per = a->heads / a->groups, g = h0 / per, n = h1 - h0, D = a->dim, T = a->keys;
    long Dp = (D + 15) / 16 * 16; /* acc rows padded: tail lanes hold zeros, never a neighbour's values */
    const char *qb = (const char *) a->q + (size_t) (b * a->qBatch) * es;
    const char *kb = (const char *) a->k + (size_t) (b * a->kvBatch + g * D) * es;
    const char *vb = (const char *) a->v + (size_t) (b * a->kvBatch + g * D) * es;
    /* queries of the run as float32, in acc for now */
    for (long i = 0; i < n; i++) {
        for (long d = 0; d < D; d += 16) _mm512_storeu_ps(acc + i * Dp + d, load16(t, qb, (h0 + i) * D + d, (h0 + i) * D + D));
    }
    for (long s = 0; s < T; s++) {
        const char *kt = kb + (size_t) (s * a->kvPos) * es;
        for (long i = 0; i < n; i++) {
            __m512 sum = _mm512_setzero_ps();
            for (long d = 0; d < D; d += 16) sum = _mm512_fmadd_ps(_mm512_loadu_ps(acc + i * Dp + d), load16(t, kt, d, D), sum);
            float v = round_to(t, round_to(t, _mm512_reduce_add_ps(sum)) * a->pre) * a->post;
            if (a->mask != NULL && a->mask[b * T + s]) v = -INFINITY;
            scores[i * T + s] = v;
        }
    }
    for (long i = 0; i < n; i++) {
        float *sc = scores + i * T;
        float m = -INFINITY;
        for (long s = 0; s < T; s++) m = sc[s] > m ? sc[s] : m;
        __m512 mv = _mm512_set1_ps(m), tot = _mm512_setzero_ps();
        long s = 0;
        for (; s + 16 <= T; s += 16) {
            __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(sc + s), mv));
            _mm512_storeu_ps(sc + s, e);
            tot = _mm512_add_ps(tot, e);
        }
        float sum = _mm512_reduce_add_ps(tot);
        for (; s < T; s++) {
            sc[s] = exp1(sc[s] - m);
            sum += sc[s];
        }
        float inv = 1.0f / sum;
        for (s = 0; s < T; s++) sc[s] = round_to(t, sc[s] * inv);
        for (long d = 0; d < Dp; d++) acc[i * Dp + d] = 0.0f;
    }
    for (long s = 0; s < T; s++) {
        const char *vt = vb + (size_t) (s * a->kvPos) * es;
        for (long d = 0; d < D; d += 16) {
            __m512 vv = load16(t, vt, d, D);
            for (long i = 0; i < n; i++) {
                __m512 o = _mm512_loadu_ps(acc + i * Dp + d);
                _mm512_storeu_ps(acc + i * Dp + d, _mm512_fmadd_ps(_mm512_set1_ps(scores[i * T + s]), vv, o));
            }
        }
    }
    char *ob = (char *) a->out + (size_t) (b * a->heads * D) * es;
    for (long i = 0; i < n; i++) {
        for (long d = 0; d < D; d++) store1(t, ob, (h0 + i) * D + d, acc[i * Dp + d]);
    }
}

/* Work item w of (batch row, group, part of the group's heads). */
T512 static void attend_item(const attend_args *a, long w, long parts, float *scores, float *acc) {
    long per = a->heads / a->groups;
    long part = w % parts, bg = w / parts, b = bg / a->groups, g = bg % a->groups;
    long h0 = g * per + part * per / parts, h1 = g * per + (part + 1) * per / parts;
    if (h1 > h0) attend_run(a, b, h0, h1, scores, acc);
}

JNIEXPORT jint JNICALL Java_io_github_bigmodel_core_kernel_NativeOps_attend0(JNIEnv *env, jclass cls, jint type,
        jlong q, jlong qBatch, jlong k, jlong v, jlong kvPos, jlong kvBatch, jlong keys, jlong batch, jlong heads,
        jlong groups, jlong dim, jlong mask, jfloat pre, jfloat post, jlong out, jint threads) {
    (void) env;
    (void) cls;
    if (level() == 0) return -1;
    attend_args a = {type, (const void *) (intptr_t) q, (const void *) (intptr_t) k, (const void *) (intptr_t) v,
                     (const uint8_t *) (intptr_t) mask, (void *) (intptr_t) out, qBatch, kvPos, kvBatch, keys, batch,
                     heads, groups, dim, pre, post};
    long per = heads / groups;
    long dpad = (dim + 15) / 16 * 16;
    size_t scratch = sizeof(float) * (size_t) (per * keys + per * dpad + 16);
    int nt = threads < 1 ? 1 : threads;
    if (keys * heads * dim * batch < 4 * PAR_MIN) nt = 1;
    /* enough items for every thread: split each group's heads when batch x groups is smaller than the team */
    long parts = 1;
    while (batch * groups * parts < nt && parts < per) parts++;
    long items = batch * groups * parts;
    int rc = 0;
#pragma omp parallel num_threads(nt)
    {
        float *buf = aligned_alloc(64, (scratch + 63) / 64 * 64);
        if (buf == NULL) {
#pragma omp atomic write
            rc = ENOMEM;
        }
        /* every thread meets the loop; one without scratch leaves its items, and the call reports ENOMEM */
#pragma omp for schedule(static)
        for (long w = 0; w < items; w++) {
            if (buf != NULL) attend_item(&a, w, parts, buf, buf + per * keys);
        }
        free(buf);
    }
    return rc;
}

/* ---------------------------------------------------------------- a decoder block at one position */

/*
 * One position (a decode step of one sequence) through a pre-norm decoder block, ChatGLM2/3's GLMBlock:
 *   n1 = rms(x); qkv = W_qkv n1 (+b); rotary on the query and key heads; key and value into the cache at `pos`;
 *   ctx = the query heads' attention over positions [0, pos]; h = (n1 or x) + W_o ctx (+b);
 *   n2 = rms(h); u = W_up n2 (+b); g = swiglu(u); out = (n2 or h) + W_down g (+b).
 * Each part is the function the op-by-op form calls (rms_rows, gemv_rows, rotary_rows, attend_item, swiglu_rows),
 * rounded to the activations' dtype at the same points, so the result is that form's bit for bit.
 * Why: the op-by-op form spends some 0.3 ms of Java, JNI and libtorch dispatch per layer on one thread while the
 * others wait; here a block is one call and one parallel region whose threads meet at barriers.
 */
typedef struct {
    int fmt;
    const void *w;
    const float *scale; /* float32 per row for int8/int4, else NULL */
    const void *bias;   /* NULL for none */
    int btype;          /* the bias' DT_* */
    long n, k;
} projection;

/* The step's argument array, as io.github.bigmodel.core.kernel.DecoderStep fills it. */
enum {
    A_X, A_OUT, A_NORM1, A_NORM2, A_COS, A_SIN, A_KEYS, A_VALUES,
    A_PROJ, /* qkv, dense, up, down: 7 values each (fmt, w, scale, bias, btype, n, k) */
    A_TYPE = A_PROJ + 28, A_NORM1_TYPE, A_NORM2_TYPE, A_COS_TYPE, A_HEADS, A_GROUPS, A_HEAD_DIM, A_ROT, A_POS,
    A_KV_POS, A_RESIDUAL_FROM_NORM, A_THREADS, A_COUNT
};

/* x (the activations' dtype, k values) as p's kernel reads it, with mm0's choices for one row; xf: float scratch [k]. */
static int prepare_projection(int lvl, int type, const projection *p, const void *x, float *xf, gemv_input *in) {
    if (p->fmt == FMT_BF16 && lvl >= 2 && type == DT_BF16) return gemv_prepare(p->fmt, lvl, NULL, x, p->k, in);
    const float *xs = x;
    if (type != DT_F32) {
        to_float(type, x, xf, p->k);
        xs = xf;
    }
    return gemv_prepare(p->fmt, lvl, xs, NULL, p->k, in);
}

/* y [n] rounded to the dtype into out, then the bias (rounded to the dtype) added and rounded: mm0, then an add. */
T512 static void finish_projection(int type, const projection *p, const float *y, void *out) {
    if (type == DT_F32) memcpy(out, y, sizeof(float) * (size_t) p->n);
    else from_float(type, y, out, p->n);
    if (p->bias != NULL) {
        for (long i = 0; i < p->n; i++) {
            store1(type, out, i, load1(type, out, i) + round_to(type, load1(p->btype, p->bias, i)));
        }
    }
}

/* out = a + b, rounded to the dtype (out may be a or b). */
T512 static void add_values(int type, const void *a, const void *b, void *out, long n) {
    for (long i = 0; i < n; i++) store1(type, out, i, load1(type, a, i) + load1(type, b, i));
}

static char *carve(char **at, size_t bytes) {
    char *p = *at;
    *at += (bytes + 63) / 64 * 64;
    return p;
}

JNIEXPORT jint JNICALL Java_io_github_bigmodel_core_kernel_DecoderStep_step0(JNIEnv *env, jclass cls,
        jlongArray args, jfloat eps, jfloat pre, jfloat post) {
    (void) cls;
    int lvl = level();
    if (lvl == 0) return -1;
    jlong a[A_COUNT];
    if ((*env)->GetArrayLength(env, args) != A_COUNT) return EINVAL;
    (*env)->GetLongArrayRegion(env, args, 0, A_COUNT, a);
    projection p[4];
    for (int i = 0; i < 4; i++) {
        const jlong *v = a + A_PROJ + 7 * i;
        p[i] = (projection) {(int) v[0], (const void *) (intptr_t) v[1], (const float *) (intptr_t) v[2],
                             (const void *) (intptr_t) v[3], (int) v[4], v[5], v[6]};
    }
    const projection *qkv = &p[0], *dense = &p[1], *up = &p[2], *down = &p[3];
    int type = (int) a[A_TYPE], n1t = (int) a[A_NORM1_TYPE], n2t = (int) a[A_NORM2_TYPE], ct = (int) a[A_COS_TYPE];
    const void *x = (const void *) (intptr_t) a[A_X];
    void *out = (void *) (intptr_t) a[A_OUT];
    char *keys = (char *) (intptr_t) a[A_KEYS], *values = (char *) (intptr_t) a[A_VALUES];
    long heads = a[A_HEADS], groups = a[A_GROUPS], D = a[A_HEAD_DIM], pos = a[A_POS], kvPos = a[A_KV_POS];
    long H = dense->n, ffn = up->n / 2, T = pos + 1;
    int rfn = a[A_RESIDUAL_FROM_NORM] != 0;
    int nt = a[A_THREADS] < 1 ? 1 : (int) a[A_THREADS];
    size_t es = type == DT_F32 ? 4 : 2;

    /* attention work items: each group's heads split so that every thread has one (per-item arithmetic is the same) */
    long per = heads / groups, dpad = (D + 15) / 16 * 16, parts = 1;
    while (groups * parts < nt && parts < per) parts++;
    long items = groups * parts;
    size_t attn = sizeof(float) * (size_t) (per * T + per * dpad + 16);

    long maxn = qkv->n, maxk = qkv->k;
    for (int i = 1; i < 4; i++) {
        if (p[i].n > maxn) maxn = p[i].n;
        if (p[i].k > maxk) maxk = p[i].k;
    }
    size_t total = 0;
    size_t parts_bytes[] = {sizeof(float) * (size_t) maxn, sizeof(float) * (size_t) maxk, es * (size_t) H,
                            es * (size_t) H, es * (size_t) H, es * (size_t) H, es * (size_t) qkv->n,
                            es * (size_t) (heads * D), es * (size_t) up->n, es * (size_t) ffn};
    for (size_t i = 0; i < sizeof parts_bytes / sizeof parts_bytes[0]; i++) total += (parts_bytes[i] + 63) / 64 * 64;
    total += (size_t) nt * ((attn + 63) / 64 * 64);
    char *base = aligned_alloc(64, total);
    if (base == NULL) return ENOMEM;
    char *at = base;
    float *yf = (float *) carve(&at, parts_bytes[0]);
    float *xf = (float *) carve(&at, parts_bytes[1]);
    char *n1 = carve(&at, parts_bytes[2]), *h = carve(&at, parts_bytes[3]), *n2 = carve(&at, parts_bytes[4]);
    char *tmp = carve(&at, parts_bytes[5]), *qkvb = carve(&at, parts_bytes[6]), *ctx = carve(&at, parts_bytes[7]);
    char *upb = carve(&at, parts_bytes[8]), *gated = carve(&at, parts_bytes[9]);
    char *attnBase = at;
    size_t attnStride = (attn + 63) / 64 * 64;

    attend_args att = {type, qkvb, keys, values, NULL, ctx, qkv->n, kvPos, groups * D, T, 1, heads, groups, D, pre,
                       post};
    gemv_input in = {NULL, NULL, {NULL, NULL, 0}, NULL};
    int rc = 0;
#pragma omp parallel num_threads(nt)
    {
#pragma omp single
        {
            rms_rows(type, x, n1t, (const void *) (intptr_t) a[A_NORM1], n1, 0, 1, H, eps);
            rc = prepare_projection(lvl, type, qkv, n1, xf, &in);
        }
        if (rc == 0) gemv_shared(qkv->fmt, lvl, qkv->w, qkv->scale, &in, yf, qkv->n, qkv->k);
#pragma omp single
        {
            gemv_release(&in);
            if (rc == 0) {
                finish_projection(type, qkv, yf, qkvb);
                rotary_rows(type, qkvb, 1, qkv->n, heads + groups, D, a[A_ROT], (const void *) (intptr_t) a[A_COS],
                            (const void *) (intptr_t) a[A_SIN], ct);
                memcpy(keys + (size_t) (pos * kvPos) * es, qkvb + (size_t) (heads * D) * es, (size_t) (groups * D) * es);
                memcpy(values + (size_t) (pos * kvPos) * es, qkvb + (size_t) ((heads + groups) * D) * es,
                       (size_t) (groups * D) * es);
            }
        }
        if (rc == 0) {
            float *buf = (float *) (attnBase + (size_t) omp_get_thread_num() * attnStride);
#pragma omp for schedule(static)
            for (long w = 0; w < items; w++) attend_item(&att, w, parts, buf, buf + per * T);
        }
#pragma omp single
        if (rc == 0) rc = prepare_projection(lvl, type, dense, ctx, xf, &in);
        if (rc == 0) gemv_shared(dense->fmt, lvl, dense->w, dense->scale, &in, yf, dense->n, dense->k);
#pragma omp single
        {
            gemv_release(&in);
            if (rc == 0) {
                finish_projection(type, dense, yf, tmp);
                add_values(type, rfn ? n1 : x, tmp, h, H);
                rms_rows(type, h, n2t, (const void *) (intptr_t) a[A_NORM2], n2, 0, 1, H, eps);
                rc = prepare_projection(lvl, type, up, n2, xf, &in);
            }
        }
        if (rc == 0) gemv_shared(up->fmt, lvl, up->w, up->scale, &in, yf, up->n, up->k);
#pragma omp single
        {
            gemv_release(&in);
            if (rc == 0) {
                finish_projection(type, up, yf, upb);
                swiglu_rows(type, upb, gated, 0, 1, ffn);
                rc = prepare_projection(lvl, type, down, gated, xf, &in);
            }
        }
        if (rc == 0) gemv_shared(down->fmt, lvl, down->w, down->scale, &in, yf, down->n, down->k);
#pragma omp single
        {
            gemv_release(&in);
            if (rc == 0) {
                finish_projection(type, down, yf, tmp);
                add_values(type, rfn ? n2 : h, tmp, out, H);
            }
        }
    }
    free(base);
    return rc;
}

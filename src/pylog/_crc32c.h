/* CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as Kafka's record batch v2 uses.
 *
 * pylog_crc32c(crc, buf, len) continues a running CRC: pass 0 to start.  On x86-64,
 * checked once at run time (so the extension loads on any x86-64 CPU): buffers of 272
 * bytes and more are folded with VPCLMULQDQ when the CPU has it and AVX-512 (about 4x the
 * crc32 instruction on 16 KiB; PYLOG_CRC32C_NO_FOLD=1 in the environment turns it off),
 * the rest go through the SSE4.2 crc32 instruction in three lanes; elsewhere a
 * slicing-by-8 table. */
#ifndef PYLOG_CRC32C_H
#define PYLOG_CRC32C_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>

static uint32_t pylog_crc32c_table[8][256];
static int pylog_crc32c_ready = 0;
static int pylog_crc32c_hw = 0;
static int pylog_crc32c_fold = 0;  /* folding with VPCLMULQDQ (x86-64 with AVX-512) */

static uint32_t pylog_crc32c_sw(uint32_t crc, const uint8_t *p, size_t n) {
    crc = ~crc;
    while (n && ((uintptr_t)p & 7)) { crc = pylog_crc32c_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8); n--; }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= crc;  /* little-endian hosts; big-endian hosts take the byte loop below */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        crc = pylog_crc32c_table[7][w & 0xff] ^ pylog_crc32c_table[6][(w >> 8) & 0xff] ^
              pylog_crc32c_table[5][(w >> 16) & 0xff] ^ pylog_crc32c_table[4][(w >> 24) & 0xff] ^
              pylog_crc32c_table[3][(w >> 32) & 0xff] ^ pylog_crc32c_table[2][(w >> 40) & 0xff] ^
              pylog_crc32c_table[1][(w >> 48) & 0xff] ^ pylog_crc32c_table[0][w >> 56];
        p += 8; n -= 8;
#else
        break;
#endif
    }
    while (n--) crc = pylog_crc32c_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
/* The crc32 instruction has a latency of 3 cycles and a throughput of one per cycle, so a
 * single dependency chain runs at a third of the unit's speed.  Long buffers are cut into
 * three equal lanes whose CRCs are computed side by side (three independent chains) and
 * then joined: the CRC register is linear, so the state after lane A followed by lane B is
 * shift_{|B|}(state after A) ^ (state of B started from zero), where shift_n multiplies by
 * x^(8n) modulo the polynomial.  shift_n is itself linear in its 32-bit input, so for the
 * lane lengths used it is tabulated as four byte-indexed tables (built at init from
 * the images of the 32 basis vectors). */
#define PYLOG_CRC32C_LONG 8192
#define PYLOG_CRC32C_MEDIUM 1024
#define PYLOG_CRC32C_SHORT 256

static uint32_t pylog_crc32c_shift_long[4][256];
static uint32_t pylog_crc32c_shift_medium[4][256];
static uint32_t pylog_crc32c_shift_short[4][256];

/* Advance a raw (not inverted) CRC register over n zero bytes, one byte at a time. */
static uint32_t pylog_crc32c_zeros_slow(uint32_t c, size_t n) {
    while (n--) c = pylog_crc32c_table[0][c & 0xff] ^ (c >> 8);
    return c;
}

static void pylog_crc32c_make_shift(uint32_t table[4][256], size_t n) {
    uint32_t basis[32];
    int i, k, v, bit;
    for (i = 0; i < 32; i++) basis[i] = pylog_crc32c_zeros_slow((uint32_t)1 << i, n);
    for (k = 0; k < 4; k++) {
        for (v = 0; v < 256; v++) {
            uint32_t r = 0;
            for (bit = 0; bit < 8; bit++)
                if (v & (1 << bit)) r ^= basis[8 * k + bit];
            table[k][v] = r;
        }
    }
}

static inline uint32_t pylog_crc32c_shift(uint32_t table[4][256], uint32_t c) {
    return table[0][c & 0xff] ^ table[1][(c >> 8) & 0xff] ^
           table[2][(c >> 16) & 0xff] ^ table[3][c >> 24];
}

/* One stage: while at least three lanes of `lane` bytes remain, run them side by side
 * and join them into c0.  Inlined with a constant `lane`, so each stage is its own loop. */
__attribute__((target("sse4.2"), always_inline))
static inline uint64_t pylog_crc32c_stage(uint64_t c0, const uint8_t **pp, size_t *np, size_t lane,
                                          uint32_t table[4][256]) {
    const uint8_t *p = *pp, *lane_end;
    size_t n = *np;
    uint64_t c1, c2, w0, w1, w2;
    while (n >= 3 * lane) {
        c1 = c2 = 0;
        lane_end = p + lane;
        do {
            memcpy(&w0, p, 8);
            memcpy(&w1, p + lane, 8);
            memcpy(&w2, p + 2 * lane, 8);
            c0 = __builtin_ia32_crc32di(c0, w0);
            c1 = __builtin_ia32_crc32di(c1, w1);
            c2 = __builtin_ia32_crc32di(c2, w2);
            p += 8;
        } while (p < lane_end);
        c0 = pylog_crc32c_shift(table, (uint32_t)c0) ^ (uint32_t)c1;
        c0 = pylog_crc32c_shift(table, (uint32_t)c0) ^ (uint32_t)c2;
        p += 2 * lane;
        n -= 3 * lane;
    }
    *pp = p;
    *np = n;
    return c0;
}

/* Folding with carry-less multiplication (VPCLMULQDQ on 512-bit registers), for CPUs that
 * have it: four 64-byte accumulators take 256 bytes a round, about three times what the
 * crc32 instruction's single port gives.  Why it works: with the register's bit i read as
 * the coefficient of x^(127-i) (reflected order, as the CRC reads bytes), a 128-bit chunk
 * A = H*x^64 + L that lies D bits before another chunk contributes A*x^D to the CRC, and
 * A*x^D = H*x^(D+64) + L*x^D is congruent modulo P to clmul(H, x^(D+63) mod P) ^
 * clmul(L, x^(D-1) mod P): a carry-less multiply of two reflected 64-bit operands yields
 * the reflected product times x, hence the -1.  Folding keeps the running value congruent
 * to everything read so far; the last 128-bit chunk (and the tail) then go through the
 * crc32 instruction from a zero register.  The running CRC enters by XOR into the first
 * four bytes.  The constants are computed at init from the polynomial (see
 * pylog_crc32c_xpow), so no magic numbers are transcribed. */
#define PYLOG_CRC32C_FOLD_MIN 272
static uint64_t pylog_crc32c_k_round[2];    /* D = 2048 bits: a zmm to the one four later */
static uint64_t pylog_crc32c_k_zmm[3][2];   /* D = 1536, 1024, 512: zmm i into zmm 3 */
static uint64_t pylog_crc32c_k_lane[3][2];  /* D = 384, 256, 128: lane j into lane 3 */

/* x^k mod P as a reflected 64-bit operand (bit j holds the coefficient of x^(63-j)). */
static uint64_t pylog_crc32c_xpow(unsigned k) {
    uint32_t r = 0x80000000u;   /* x^0 in the reflected 32-bit register */
    while (k--) r = (r & 1) ? (r >> 1) ^ 0x82F63B78u : (r >> 1);
    return (uint64_t)r << 32;
}

static void pylog_crc32c_fold_pair(uint64_t out[2], unsigned d) {
    out[0] = pylog_crc32c_xpow(d + 63);  /* multiplies the low qword (H) */
    out[1] = pylog_crc32c_xpow(d - 1);   /* multiplies the high qword (L) */
}

#include <immintrin.h>

__attribute__((target("avx512f,vpclmulqdq"), always_inline))
static inline __m512i pylog_crc32c_fold512(__m512i acc, __m512i k, __m512i next) {
    return _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(acc, k, 0x00),
                                     _mm512_clmulepi64_epi128(acc, k, 0x11), next, 0x96);
}

__attribute__((target("pclmul,sse2"), always_inline))
static inline __m128i pylog_crc32c_fold128(__m128i acc, const uint64_t k[2], __m128i next) {
    __m128i kk = _mm_set_epi64x((long long)k[1], (long long)k[0]);
    return _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(acc, kk, 0x00),
                                       _mm_clmulepi64_si128(acc, kk, 0x11)), next);
}

/* Needs n >= 256 + 16.  Returns the raw (not inverted) register after the whole buffer. */
__attribute__((target("avx512f,vpclmulqdq,pclmul,sse4.2")))
static uint64_t pylog_crc32c_fold_impl(uint32_t c, const uint8_t *p, size_t n) {
    __m512i a0, a1, a2, a3, k;
    __m128i x, lanes[4];
    uint64_t w[2], r;
    int i;
    a0 = _mm512_xor_si512(_mm512_loadu_si512((const void *)p), _mm512_castsi128_si512(_mm_cvtsi32_si128((int)c)));
    a1 = _mm512_loadu_si512((const void *)(p + 64));
    a2 = _mm512_loadu_si512((const void *)(p + 128));
    a3 = _mm512_loadu_si512((const void *)(p + 192));
    p += 256; n -= 256;
    k = _mm512_broadcast_i32x4(_mm_set_epi64x((long long)pylog_crc32c_k_round[1],
                                              (long long)pylog_crc32c_k_round[0]));
    while (n >= 256) {
        a0 = pylog_crc32c_fold512(a0, k, _mm512_loadu_si512((const void *)p));
        a1 = pylog_crc32c_fold512(a1, k, _mm512_loadu_si512((const void *)(p + 64)));
        a2 = pylog_crc32c_fold512(a2, k, _mm512_loadu_si512((const void *)(p + 128)));
        a3 = pylog_crc32c_fold512(a3, k, _mm512_loadu_si512((const void *)(p + 192)));
        p += 256; n -= 256;
    }
    /* four accumulators into a3, then its four lanes into one */
    k = _mm512_broadcast_i32x4(_mm_set_epi64x((long long)pylog_crc32c_k_zmm[0][1], (long long)pylog_crc32c_k_zmm[0][0]));
    a3 = pylog_crc32c_fold512(a0, k, a3);
    k = _mm512_broadcast_i32x4(_mm_set_epi64x((long long)pylog_crc32c_k_zmm[1][1], (long long)pylog_crc32c_k_zmm[1][0]));
    a3 = pylog_crc32c_fold512(a1, k, a3);
    k = _mm512_broadcast_i32x4(_mm_set_epi64x((long long)pylog_crc32c_k_zmm[2][1], (long long)pylog_crc32c_k_zmm[2][0]));
    a3 = pylog_crc32c_fold512(a2, k, a3);
    lanes[0] = _mm512_extracti32x4_epi32(a3, 0);
    lanes[1] = _mm512_extracti32x4_epi32(a3, 1);
    lanes[2] = _mm512_extracti32x4_epi32(a3, 2);
    lanes[3] = _mm512_extracti32x4_epi32(a3, 3);
    x = lanes[3];
    for (i = 0; i < 3; i++) x = pylog_crc32c_fold128(lanes[i], pylog_crc32c_k_lane[i], x);
    /* whole 16-byte chunks left: fold by 128 bits each */
    while (n >= 16) {
        x = pylog_crc32c_fold128(x, pylog_crc32c_k_lane[2], _mm_loadu_si128((const __m128i *)p));
        p += 16; n -= 16;
    }
    _mm_storeu_si128((__m128i *)w, x);
    r = __builtin_ia32_crc32di(0, w[0]);
    r = __builtin_ia32_crc32di(r, w[1]);
    while (n--) r = __builtin_ia32_crc32qi((uint32_t)r, *p++);
    return r;
}

__attribute__((target("sse4.2")))
static uint32_t pylog_crc32c_lanes_impl(uint32_t crc, const uint8_t *p, size_t n) {
    uint64_t c0 = (uint32_t)~crc, w0;
    while (n && ((uintptr_t)p & 7)) { c0 = __builtin_ia32_crc32qi((uint32_t)c0, *p++); n--; }
    c0 = pylog_crc32c_stage(c0, &p, &n, PYLOG_CRC32C_LONG, pylog_crc32c_shift_long);
    c0 = pylog_crc32c_stage(c0, &p, &n, PYLOG_CRC32C_MEDIUM, pylog_crc32c_shift_medium);
    c0 = pylog_crc32c_stage(c0, &p, &n, PYLOG_CRC32C_SHORT, pylog_crc32c_shift_short);
    while (n >= 8) { memcpy(&w0, p, 8); c0 = __builtin_ia32_crc32di(c0, w0); p += 8; n -= 8; }
    while (n--) c0 = __builtin_ia32_crc32qi((uint32_t)c0, *p++);
    return ~(uint32_t)c0;
}

static inline uint32_t pylog_crc32c_hw_impl(uint32_t crc, const uint8_t *p, size_t n) {
    if (n >= PYLOG_CRC32C_FOLD_MIN && pylog_crc32c_fold)
        return ~(uint32_t)pylog_crc32c_fold_impl(~crc, p, n);
    return pylog_crc32c_lanes_impl(crc, p, n);
}
#endif

static void pylog_crc32c_init(void) {
    uint32_t i, j, c;
    if (pylog_crc32c_ready) return;
    for (i = 0; i < 256; i++) {
        c = i;
        for (j = 0; j < 8; j++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : (c >> 1);
        pylog_crc32c_table[0][i] = c;
    }
    for (i = 0; i < 256; i++) {
        c = pylog_crc32c_table[0][i];
        for (j = 1; j < 8; j++) {
            c = pylog_crc32c_table[0][c & 0xff] ^ (c >> 8);
            pylog_crc32c_table[j][i] = c;
        }
    }
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    pylog_crc32c_hw = __builtin_cpu_supports("sse4.2");
    pylog_crc32c_fold = pylog_crc32c_hw && __builtin_cpu_supports("pclmul") &&
                        __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("vpclmulqdq") &&
                        getenv("PYLOG_CRC32C_NO_FOLD") == NULL;
    pylog_crc32c_fold_pair(pylog_crc32c_k_round, 2048);
    for (i = 0; i < 3; i++) {
        pylog_crc32c_fold_pair(pylog_crc32c_k_zmm[i], 512 * (3 - i));
        pylog_crc32c_fold_pair(pylog_crc32c_k_lane[i], 128 * (3 - i));
    }
    pylog_crc32c_make_shift(pylog_crc32c_shift_long, PYLOG_CRC32C_LONG);
    pylog_crc32c_make_shift(pylog_crc32c_shift_medium, PYLOG_CRC32C_MEDIUM);
    pylog_crc32c_make_shift(pylog_crc32c_shift_short, PYLOG_CRC32C_SHORT);
#endif
    pylog_crc32c_ready = 1;
}

/* For tests and diagnostics: the CRC by one implementation (0 the portable table, 1 the
 * crc32 instruction in lanes, 2 folding; the last needs n >= PYLOG_CRC32C_FOLD_MIN).
 * Sets *ok to 0, and returns 0, when this CPU (or build) can't run it. */
static uint32_t pylog_crc32c_by(int impl, uint32_t crc, const uint8_t *p, size_t n, int *ok) {
    *ok = 1;
    if (impl == 0) return pylog_crc32c_sw(crc, p, n);
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (impl == 1 && pylog_crc32c_hw) return pylog_crc32c_lanes_impl(crc, p, n);
    if (impl == 2 && pylog_crc32c_fold && n >= PYLOG_CRC32C_FOLD_MIN)
        return ~(uint32_t)pylog_crc32c_fold_impl(~crc, p, n);
#endif
    *ok = 0;
    return 0;
}

/* Which implementation long buffers take: 2 folding, 1 crc32 lanes, 0 portable. */
static int pylog_crc32c_impl(void) {
    return pylog_crc32c_fold ? 2 : pylog_crc32c_hw ? 1 : 0;
}

static inline uint32_t pylog_crc32c(uint32_t crc, const uint8_t *p, size_t n) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (pylog_crc32c_hw) return pylog_crc32c_hw_impl(crc, p, n);
#endif
    return pylog_crc32c_sw(crc, p, n);
}

#endif

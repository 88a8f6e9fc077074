/* CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as Kafka's record batch v2 uses.
 *
 * pylog_crc32c(crc, buf, len) continues a running CRC: pass 0 to start.  On x86-64 the
 * SSE4.2 crc32 instruction is used when the CPU has it (checked once at run time, so the
 * extension still loads on CPUs without it); elsewhere a slicing-by-8 table. */
#ifndef PYLOG_CRC32C_H
#define PYLOG_CRC32C_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static uint32_t pylog_crc32c_table[8][256];
static int pylog_crc32c_ready = 0;
static int pylog_crc32c_hw = 0;

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

__attribute__((target("sse4.2")))
static uint32_t pylog_crc32c_hw_impl(uint32_t crc, const uint8_t *p, size_t n) {
    uint64_t c0 = (uint32_t)~crc, w0;
    while (n && ((uintptr_t)p & 7)) { c0 = __builtin_ia32_crc32qi((uint32_t)c0, *p++); n--; }
    c0 = pylog_crc32c_stage(c0, &p, &n, PYLOG_CRC32C_LONG, pylog_crc32c_shift_long);
    c0 = pylog_crc32c_stage(c0, &p, &n, PYLOG_CRC32C_MEDIUM, pylog_crc32c_shift_medium);
    c0 = pylog_crc32c_stage(c0, &p, &n, PYLOG_CRC32C_SHORT, pylog_crc32c_shift_short);
    while (n >= 8) { memcpy(&w0, p, 8); c0 = __builtin_ia32_crc32di(c0, w0); p += 8; n -= 8; }
    while (n--) c0 = __builtin_ia32_crc32qi((uint32_t)c0, *p++);
    return ~(uint32_t)c0;
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
    pylog_crc32c_make_shift(pylog_crc32c_shift_long, PYLOG_CRC32C_LONG);
    pylog_crc32c_make_shift(pylog_crc32c_shift_medium, PYLOG_CRC32C_MEDIUM);
    pylog_crc32c_make_shift(pylog_crc32c_shift_short, PYLOG_CRC32C_SHORT);
#endif
    pylog_crc32c_ready = 1;
}

static inline uint32_t pylog_crc32c(uint32_t crc, const uint8_t *p, size_t n) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (pylog_crc32c_hw) return pylog_crc32c_hw_impl(crc, p, n);
#endif
    return pylog_crc32c_sw(crc, p, n);
}

#endif

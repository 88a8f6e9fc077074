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
#endif
    pylog_crc32c_ready = 1;
}

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
__attribute__((target("sse4.2")))
static uint32_t pylog_crc32c_hw_impl(uint32_t crc, const uint8_t *p, size_t n) {
    uint64_t c = (uint32_t)~crc;
    while (n && ((uintptr_t)p & 7)) { c = __builtin_ia32_crc32qi((uint32_t)c, *p++); n--; }
    while (n >= 8) { uint64_t w; memcpy(&w, p, 8); c = __builtin_ia32_crc32di(c, w); p += 8; n -= 8; }
    while (n--) c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
    return ~(uint32_t)c;
}
#endif

static inline uint32_t pylog_crc32c(uint32_t crc, const uint8_t *p, size_t n) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (pylog_crc32c_hw) return pylog_crc32c_hw_impl(crc, p, n);
#endif
    return pylog_crc32c_sw(crc, p, n);
}

#endif

/*
 * UTF-8 for the text code (tokenizer.c, bpe.c, vocab_trainer.c): one decoder, as
 * Python's decode(errors="replace") reads bytes, and one encoder.
 */
#ifndef MLM_TEXT_UTF8_H
#define MLM_TEXT_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Decodes the code point at s (n > 0 bytes left) into *cp and returns its length in
 * bytes. An ill-formed sequence (RFC 3629: no overlongs, surrogates or values above
 * U+10FFFF) gives U+FFFD and the length of its maximal ill-formed subsequence: the
 * lead byte and the continuation bytes that were acceptable before the first one
 * that was not (at least 1), where Python resumes too. */
static inline size_t mlm_utf8_decode(const uint8_t *s, size_t n, uint32_t *cp) {
    uint8_t b = s[0];
    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    int len = b >= 0xC2 && b <= 0xDF ? 2 : b >= 0xE0 && b <= 0xEF ? 3 : b >= 0xF0 && b <= 0xF4 ? 4 : 0;
    *cp = 0xFFFD;
    if (len == 0) return 1;
    // the second byte's range excludes overlongs (E0, F0), surrogates (ED), > U+10FFFF (F4)
    uint8_t lo = b == 0xE0 ? 0xA0 : b == 0xF0 ? 0x90 : 0x80;
    uint8_t hi = b == 0xED ? 0x9F : b == 0xF4 ? 0x8F : 0xBF;
    if (n < 2 || s[1] < lo || s[1] > hi) return 1;
    uint32_t c = (uint32_t)(b & (0x7F >> len)) << 6 | (s[1] & 0x3F);
    for (int i = 2; i < len; i++) {
        if ((size_t)i >= n || (s[i] & 0xC0) != 0x80) return (size_t)i;
        c = c << 6 | (s[i] & 0x3F);
    }
    *cp = c;
    return (size_t)len;
}

/* Writes the 1-4 bytes of code point cp (at most U+10FFFF) to out; returns how many. */
static inline size_t mlm_utf8_encode(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    size_t n = cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    static const uint8_t lead[5] = {0, 0, 0xC0, 0xE0, 0xF0};
    for (size_t k = n - 1; k > 0; k--, cp >>= 6) out[k] = (char)(0x80 | (cp & 0x3F));
    out[0] = (char)(lead[n] | cp);
    return n;
}

#endif

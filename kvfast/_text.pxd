# Byte-string helpers shared by both protocols, inlined where they are used.
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy, strlen


cdef enum IntParse:
    INT_OK = 0
    INT_NOT_INTEGER = 1
    INT_OUT_OF_RANGE = 2


cdef extern from *:
    """
    #if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
    #error "kvfast's digit parsing (eight_digits) assumes a little-endian machine"
    #endif
    static const unsigned long long kvfast_powers_of_ten[9] = {
        1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL, 1000000ULL, 10000000ULL, 100000000ULL};
    """
    const uint64_t POWERS_OF_TEN "kvfast_powers_of_ten" [9]


cdef inline bint eight_digits(uint64_t chunk, uint64_t *value) noexcept nogil:
    """The value of eight ASCII decimal digits packed into a word as loaded from
    memory on a little-endian machine (the first digit in the lowest byte), or
    False if any byte is not a digit.

    SWAR (SIMD within a register): every byte is a digit when its high nibble
    is 3 and adding 6 does not carry into that nibble (0x3A..0x3F would). Then
    neighbouring digits combine in three multiply-and-shift steps: pairs (each
    byte times 10 plus the next byte), quads (times 100), the whole (times
    10,000); no lane can overflow into the next because each result fits its
    lane. About 15 instructions instead of 8 rounds of the byte loop.
    """
    if (chunk & 0xF0F0F0F0F0F0F0F0ULL) != 0x3030303030303030ULL \
            or ((chunk + 0x0606060606060606ULL) & 0xF0F0F0F0F0F0F0F0ULL) != 0x3030303030303030ULL:
        return False
    chunk -= 0x3030303030303030ULL
    chunk = (chunk * 10 + (chunk >> 8)) & 0x00FF00FF00FF00FFULL
    chunk = (chunk * 100 + (chunk >> 16)) & 0x0000FFFF0000FFFFULL
    value[0] = (chunk * 10000 + (chunk >> 32)) & 0xFFFFFFFFULL
    return True


cdef inline bint digits_value(const char *text, size_t length, uint64_t *value) noexcept nogil:
    """The value of ``text[:length]`` when it is 1 to 18 ASCII decimal digits
    (leading zeros allowed; 18 digits cannot overflow), else False.

    Runs of 8 or more digits go through eight_digits, eight at a time; the last
    partial run re-reads the word that ends at the last digit and replaces the
    bytes already counted by "0"s, so no byte outside ``text`` is ever read.
    Shorter numbers take the byte loop.
    """
    cdef uint64_t magnitude = 0, chunk, part, counted
    cdef size_t i = 0, rest
    if length >= 8:
        while length - i >= 8:
            memcpy(&chunk, text + i, 8)
            if not eight_digits(chunk, &part):
                return False
            magnitude = magnitude * 100000000ULL + part
            i += 8
        rest = length - i
        if rest > 0:
            memcpy(&chunk, text + length - 8, 8)
            # Its low (8 - rest) bytes were counted already: make them leading zeros.
            counted = (<uint64_t>1 << (8 * (8 - rest))) - 1
            chunk = (chunk & ~counted) | (0x3030303030303030ULL & counted)
            if not eight_digits(chunk, &part):
                return False
            magnitude = magnitude * POWERS_OF_TEN[rest] + part
        value[0] = magnitude
        return True
    if length == 0:
        return False
    while i < length:
        if text[i] < c'0' or text[i] > c'9':
            return False
        magnitude = magnitude * 10 + <uint64_t>(text[i] - c'0')
        i += 1
    value[0] = magnitude
    return True


cdef inline IntParse parse_int64(const char *text, size_t length, int64_t *out) noexcept nogil:
    """Parse an optionally signed decimal int64 (leading zeros allowed).

    Returns INT_OK and stores the value, INT_NOT_INTEGER for anything but
    ``[+-]?[0-9]+``, or INT_OUT_OF_RANGE when the digits do not fit in int64
    (a later non-digit still makes it INT_NOT_INTEGER).
    """
    cdef size_t i = 0
    cdef bint negative = False, overflow = False
    cdef uint64_t magnitude = 0, digit, limit
    if length > 0 and (text[0] == c'+' or text[0] == c'-'):
        negative = text[0] == c'-'
        i = 1
    if i == length:
        return INT_NOT_INTEGER
    if length - i <= 18:                     # fewer than 19 digits cannot overflow int64
        if not digits_value(text + i, length - i, &magnitude):
            return INT_NOT_INTEGER
        out[0] = <int64_t>(0 - magnitude) if negative else <int64_t>magnitude
        return INT_OK
    limit = (<uint64_t>1 << 63) if negative else ((<uint64_t>1 << 63) - 1)
    while i < length:
        if text[i] < c'0' or text[i] > c'9':
            return INT_NOT_INTEGER
        digit = <uint64_t>(text[i] - c'0')
        if not overflow and magnitude > (limit - digit) // 10:
            overflow = True
        magnitude = magnitude * 10 + digit
        i += 1
    if overflow:
        return INT_OUT_OF_RANGE
    out[0] = <int64_t>(0 - magnitude) if negative else <int64_t>magnitude
    return INT_OK


cdef inline size_t format_int64(int64_t value, char *end) noexcept nogil:
    """Write ``value`` in decimal so that it ends just before ``end`` (a buffer of
    at least 20 bytes before it); returns the number of characters written."""
    cdef char *position = end
    cdef uint64_t magnitude = (0 - <uint64_t>value) if value < 0 else <uint64_t>value
    while True:
        position -= 1
        position[0] = <char>(c'0' + magnitude % 10)
        magnitude //= 10
        if magnitude == 0:
            break
    if value < 0:
        position -= 1
        position[0] = c'-'
    return end - position


cdef inline bint equals_nocase(const char *word, size_t length, const char *lowercase) noexcept nogil:
    """Case-insensitive comparison of a word with an ASCII lower-case name made
    of letters (``x | 0x20`` maps an upper-case letter to its lower case and
    never turns any other byte into a lower-case letter; names with other bytes,
    such as ``*``, may match a few more spellings)."""
    if length != strlen(lowercase):
        return False
    return same_letters_nocase(word, length, lowercase)


cdef inline bint same_letters_nocase(const char *word, size_t length, const char *lowercase) noexcept nogil:
    """equals_nocase for a name already known to be ``length`` bytes long."""
    cdef size_t i
    for i in range(length):
        if (word[i] | 0x20) != lowercase[i]:
            return False
    return True


cdef inline bint secrets_equal(const char *attempt, size_t attempt_length,
                               const char *secret, size_t secret_length) noexcept nogil:
    """Compare a password attempt with the secret in time that depends only on
    the secret's length, never on where the first difference is."""
    cdef unsigned char difference = 0 if attempt_length == secret_length else 1
    cdef size_t i
    for i in range(secret_length):
        difference |= <unsigned char>(secret[i] ^ (attempt[i] if i < attempt_length else 0))
    return difference == 0

# Byte-string helpers shared by both protocols, inlined where they are used.
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport strlen


cdef enum IntParse:
    INT_OK = 0
    INT_NOT_INTEGER = 1
    INT_OUT_OF_RANGE = 2


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
        while i < length:
            if text[i] < c'0' or text[i] > c'9':
                return INT_NOT_INTEGER
            magnitude = magnitude * 10 + <uint64_t>(text[i] - c'0')
            i += 1
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
    cdef size_t i
    if length != strlen(lowercase):
        return False
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

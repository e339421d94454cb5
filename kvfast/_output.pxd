# A connection's output buffer: replies waiting to be sent. Inlined helpers,
# shared by the loop and both protocol modules.
from libc.errno cimport ENOMEM
from libc.stdint cimport int64_t
from libc.stdlib cimport realloc, free
from libc.string cimport memcpy, memmove, strlen

from kvfast._system cimport set_errno
from kvfast._text cimport format_int64


cdef struct Output:
    char *data               # unsent bytes are data[start:end]
    size_t start
    size_t end
    size_t capacity


cdef inline size_t output_pending(const Output *output) noexcept nogil:
    return output.end - output.start


cdef inline int output_append(Output *output, const char *data, size_t length) noexcept nogil:
    """Append ``length`` bytes, first moving unsent bytes to the front, then
    doubling the buffer if still needed. Returns 0, or -1 with errno ENOMEM."""
    cdef size_t pending, capacity
    cdef char *grown
    if length > (<size_t>1 << 40):          # no reply is this large: refuse rather than overflow
        set_errno(ENOMEM)
        return -1
    if output.end + length > output.capacity:
        pending = output.end - output.start
        if output.start > 0:
            memmove(output.data, output.data + output.start, pending)
            output.start = 0
            output.end = pending
        if pending + length > output.capacity:
            capacity = output.capacity * 2 if output.capacity else 512
            while capacity < pending + length:
                capacity *= 2
            grown = <char *>realloc(output.data, capacity)
            if grown == NULL:
                set_errno(ENOMEM)
                return -1
            output.data = grown
            output.capacity = capacity
    memcpy(output.data + output.end, data, length)
    output.end += length
    return 0


cdef inline int output_text(Output *output, const char *text) noexcept nogil:
    """Append a NUL-terminated string (without the NUL); 0 or -1 (ENOMEM)."""
    return output_append(output, text, strlen(text))


cdef inline int output_int64(Output *output, int64_t value, const char *suffix) noexcept nogil:
    """Append ``value`` in decimal followed by the short string ``suffix``."""
    cdef char digits[24]
    cdef size_t length = format_int64(value, digits + 24)
    if output_append(output, digits + 24 - length, length) < 0:
        return -1
    return output_text(output, suffix)


cdef inline void output_free(Output *output) noexcept nogil:
    free(output.data)
    output.data = NULL
    output.start = output.end = output.capacity = 0

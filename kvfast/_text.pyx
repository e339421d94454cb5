# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Python access to the inline text helpers of ``_text.pxd``, for tests.

The helpers themselves are inlined into the protocol modules; this module only
lets tests hold the very same code to Python's own parsing.
"""
from libc.stdint cimport int64_t


def parse_integer(bytes text not None):
    """``parse_int64`` on ``text``: the int, ``"not an integer"`` or ``"out of range"``."""
    cdef const char *data = text
    cdef size_t length = len(text)
    cdef int64_t value = 0
    cdef IntParse result
    with nogil:
        result = parse_int64(data, length, &value)
    if result == INT_OK:
        return value
    return "not an integer" if result == INT_NOT_INTEGER else "out of range"

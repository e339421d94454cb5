# The server's counters and gauges, one row each (kvfast/_stats.pyx): the one
# table that native ``stats``, INFO and EventLoop.stats() all render.
from kvfast._context cimport ServerContext
from kvfast._output cimport Output


cdef enum StatsSection:
    # Where a row is shown in INFO (one section each, or none).
    INFO_NONE = 0
    INFO_CLIENTS
    INFO_MEMORY
    INFO_PERSISTENCE
    INFO_STATS
    INFO_REPLICATION


cdef int write_stats_line(Output *output, ServerContext *context) noexcept nogil
cdef int write_info_section(Output *output, ServerContext *context, StatsSection section) noexcept nogil
cdef dict stats_as_dict(ServerContext *context)
cdef int write_prometheus(Output *output, ServerContext *context) noexcept nogil

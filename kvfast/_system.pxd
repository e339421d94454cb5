# C declarations of the Linux system headers the event loop calls directly.
# Names, never hard-coded values: every constant comes from the real header at
# compile time. Cython's bundled libc/posix .pxd files cover the rest
# (errno, string.h, stdlib.h, unistd.h).
from libc.errno cimport errno
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport strerror


cdef extern from "sys/epoll.h" nogil:
    ctypedef union epoll_data_t:
        void *ptr
        int fd
        uint32_t u32
        uint64_t u64

    struct epoll_event:
        uint32_t events
        epoll_data_t data

    enum:
        EPOLLIN
        EPOLLOUT
        EPOLLERR
        EPOLLHUP
        EPOLL_CTL_ADD
        EPOLL_CTL_MOD
        EPOLL_CTL_DEL
        EPOLL_CLOEXEC

    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)


cdef extern from "sys/socket.h" nogil:
    ctypedef unsigned int socklen_t

    struct sockaddr:
        pass

    enum:
        SOCK_NONBLOCK
        SOCK_CLOEXEC
        MSG_NOSIGNAL

    int accept4(int sockfd, sockaddr *addr, socklen_t *addrlen, int flags)
    int setsockopt(int sockfd, int level, int optname, const void *optval, socklen_t optlen)
    ssize_t recv(int sockfd, void *buf, size_t len, int flags)
    ssize_t send(int sockfd, const void *buf, size_t len, int flags)
    int shutdown(int sockfd, int how)
    enum:
        SHUT_WR


cdef extern from "netinet/in.h" nogil:
    enum:
        IPPROTO_TCP


cdef extern from "netinet/tcp.h" nogil:
    enum:
        TCP_NODELAY


cdef extern from "sys/eventfd.h" nogil:
    ctypedef uint64_t eventfd_t

    enum:
        EFD_NONBLOCK
        EFD_CLOEXEC

    int eventfd(unsigned int initval, int flags)
    int eventfd_read(int fd, eventfd_t *value)
    int eventfd_write(int fd, eventfd_t value)


cdef extern from "fcntl.h" nogil:
    enum:
        O_NONBLOCK
        O_CLOEXEC


cdef extern from "unistd.h" nogil:
    int pipe2(int *pipefd, int flags)


cdef extern from "sys/socket.h" nogil:
    int connect(int sockfd, const sockaddr *addr, socklen_t addrlen)
    int socket(int domain, int type, int protocol)
    int getsockopt(int sockfd, int level, int optname, void *optval, socklen_t *optlen)
    enum:
        AF_INET
        SOCK_STREAM
        SOL_SOCKET
        SO_ERROR


cdef extern from "netinet/in.h" nogil:
    ctypedef unsigned short in_port_t
    ctypedef unsigned int in_addr_t

    struct in_addr:
        in_addr_t s_addr

    struct sockaddr_in:
        unsigned short sin_family
        in_port_t sin_port
        in_addr sin_addr

    in_port_t htons(in_port_t hostshort)


cdef extern from "arpa/inet.h" nogil:
    int inet_pton(int af, const char *src, void *dst)


cdef extern from "time.h" nogil:
    ctypedef long time_t

    struct timespec:
        time_t tv_sec
        long tv_nsec

    enum:
        CLOCK_MONOTONIC
        CLOCK_REALTIME

    int clock_gettime(int clk_id, timespec *tp)


cdef extern from "sys/mman.h" nogil:
    enum:
        MADV_DONTNEED       # Linux's: drops the pages now (POSIX's variant is only advice)

    int madvise(void *addr, size_t length, int advice)


cdef extern from *:
    """
    #include <errno.h>
    static inline void kvfast_set_errno(int value) { errno = value; }
    """
    # Cython makes ``errno = x`` inside a function a local variable: set the C one here.
    void set_errno "kvfast_set_errno" (int value) nogil


cdef extern from "sys/socket.h" nogil:
    struct sockaddr_storage:
        unsigned short ss_family


cdef extern from "netinet/in.h" nogil:
    enum:
        AF_INET6
        INADDR_LOOPBACK

    struct in6_addr:
        unsigned char s6_addr[16]

    struct sockaddr_in6:
        unsigned short sin6_family
        in6_addr sin6_addr

    unsigned int htonl(unsigned int hostlong)


cdef extern from "sys/un.h" nogil:
    enum:
        AF_UNIX

    struct sockaddr_un:
        unsigned short sun_family
        char sun_path[108]


# ---- the append-only log (_aof.pyx) ------------------------------------------------

cdef extern from "pthread.h" nogil:
    ctypedef unsigned long pthread_t
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_attr_t:
        pass

    int pthread_create(pthread_t *thread, const pthread_attr_t *attr, void *(*start)(void *) noexcept nogil,
                       void *arg)
    int pthread_join(pthread_t thread, void **result)
    int pthread_detach(pthread_t thread)
    int pthread_mutex_init(pthread_mutex_t *mutex, const void *attr)
    int pthread_mutex_destroy(pthread_mutex_t *mutex)
    int pthread_mutex_lock(pthread_mutex_t *mutex)
    int pthread_mutex_unlock(pthread_mutex_t *mutex)


cdef extern from "poll.h" nogil:
    struct pollfd:
        int fd
        short events
        short revents

    enum:
        POLLIN

    int poll(pollfd *fds, unsigned long nfds, int timeout)


cdef extern from "sys/prctl.h" nogil:
    enum:
        PR_SET_PDEATHSIG

    int prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4, unsigned long arg5)


cdef extern from "sys/syscall.h" nogil:
    enum:
        SYS_close_range

    long syscall(long number, ...)


cdef extern from "stdio.h" nogil:
    int rename(const char *oldpath, const char *newpath)


cdef extern from "sys/mman.h" nogil:
    enum:
        MAP_SHARED
        MADV_SEQUENTIAL


cdef extern from *:
    """
    #include <stdint.h>
    static inline uint64_t kvfast_load_acquire(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline void kvfast_store_release(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    """
    # Values shared with another thread or a forked child, read and written whole.
    uint64_t load_acquire "kvfast_load_acquire" (const uint64_t *p) nogil
    void store_release "kvfast_store_release" (uint64_t *p, uint64_t value) nogil


cdef extern from "sys/file.h" nogil:
    enum:
        LOCK_EX
        LOCK_NB

    int flock(int fd, int operation)


cdef extern from *:
    """
    #include <stdio.h>
    #include <stdlib.h>
    #ifdef KVFAST_DEBUG
    #define KVFAST_ASSERT(condition) \\
        ((condition) ? (void)0 : (fprintf(stderr, "kvfast: assertion failed: %s (%s:%d)\\n", \\
                                          #condition, __FILE__, __LINE__), abort()))
    #else
    #define KVFAST_ASSERT(condition) ((void)0)
    #endif
    """
    # For the branches that cannot happen: in a KVFAST_DEBUG build (the
    # sanitizer build, scripts/sanitize.sh) a false condition aborts with its
    # text and place; in a normal build it compiles to nothing, so the
    # defensive code after it (which keeps the server serving) stays in charge.
    void debug_assert "KVFAST_ASSERT" (bint condition) nogil


cdef inline int64_t monotonic_ms() noexcept nogil:
    """Milliseconds on the monotonic clock: deadlines, timeouts, retry times."""
    cdef timespec now
    clock_gettime(CLOCK_MONOTONIC, &now)
    return <int64_t>now.tv_sec * 1000 + now.tv_nsec // 1000000


cdef inline int64_t realtime_ms() noexcept nogil:
    """Milliseconds since the Unix epoch (the wall clock): key deadlines, which
    are absolute Unix times as Redis's and survive a restart."""
    cdef timespec now
    clock_gettime(CLOCK_REALTIME, &now)
    return <int64_t>now.tv_sec * 1000 + now.tv_nsec // 1000000


cdef inline int64_t monotonic_us() noexcept nogil:
    """Microseconds on the monotonic clock: pause and fork durations."""
    cdef timespec now
    clock_gettime(CLOCK_MONOTONIC, &now)
    return <int64_t>now.tv_sec * 1000000 + now.tv_nsec // 1000


cdef inline int raise_os_error() except -1:
    """Raise the C ``errno`` as OSError: the one place where a failed system
    call becomes a Python exception (C functions report failure by returning -1
    with errno set; the Python-facing method that called them calls this)."""
    cdef int error = errno
    raise OSError(error, strerror(error).decode(errors="replace"))

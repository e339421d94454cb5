#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

/* fdatasync fails with EIO while the file named by KVFAST_TEST_FAIL_SYNC exists. */
int fdatasync(int fd) {
    static int (*real)(int) = 0;
    const char *flag = getenv("KVFAST_TEST_FAIL_SYNC");
    if (flag != 0 && access(flag, F_OK) == 0) {
        errno = EIO;
        return -1;
    }
    if (real == 0)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    return real(fd);
}

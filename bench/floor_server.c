/* The floor of the CPU-per-request comparison with Redis: a bare
 * level-triggered epoll server that does nothing but the system calls every
 * server of this kind must make (epoll_wait, one recv per readable event, one
 * send of the replies) and answers each RESP request with a constant "+OK"
 * (or, started with the argument "native", each native request line with "OK").
 * It parses nothing and stores nothing, so kvfast can come close to its
 * figure but not below it. Built and run by bench/floor.py; not part of kvfast.
 *
 *     cc -O2 -o floor_server bench/floor_server.c && ./floor_server PORT [native]
 *
 * RESP requests are counted by their '*' bytes (the benchmark's keys and
 * values are digits), native ones by their '\n', so a request split across
 * two reads is still answered once. Prints "ready" once listening on
 * 127.0.0.1:PORT.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_EVENTS 256
#define READ_BYTES 16384
#define LONGEST_REPLY_BYTES 5

int main(int argc, char **argv) {
    static char input[READ_BYTES], output[READ_BYTES * LONGEST_REPLY_BYTES];
    struct epoll_event event, events[MAX_EVENTS];
    struct sockaddr_in address = {.sin_family = AF_INET};
    int one = 1, listener, poller;
    int native = argc == 3 && strcmp(argv[2], "native") == 0;
    const char *reply = native ? "OK\n" : "+OK\r\n";
    size_t reply_bytes = strlen(reply);
    char request_end = native ? '\n' : '*';

    if (argc != 2 && !native) {
        fprintf(stderr, "usage: %s PORT [native]\n", argv[0]);
        return 2;
    }
    address.sin_port = htons((unsigned short)atoi(argv[1]));
    inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
    listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (listener < 0 || bind(listener, (struct sockaddr *)&address, sizeof address) < 0
            || listen(listener, 4096) < 0) {
        perror("floor_server: listen");
        return 1;
    }
    poller = epoll_create1(EPOLL_CLOEXEC);
    event.events = EPOLLIN;
    event.data.fd = listener;
    epoll_ctl(poller, EPOLL_CTL_ADD, listener, &event);
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        int ready = epoll_wait(poller, events, MAX_EVENTS, -1);
        for (int i = 0; i < ready; i++) {
            int fd = events[i].data.fd, client;
            ssize_t received;
            size_t replies = 0;
            if (fd == listener) {
                while ((client = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    event.events = EPOLLIN;
                    event.data.fd = client;
                    epoll_ctl(poller, EPOLL_CTL_ADD, client, &event);
                }
                continue;
            }
            received = recv(fd, input, sizeof input, 0);
            if (received <= 0) {
                if (received < 0 && (errno == EAGAIN || errno == EINTR))
                    continue;
                close(fd);
                continue;
            }
            for (ssize_t j = 0; j < received; j++)
                if (input[j] == request_end)
                    memcpy(output + reply_bytes * replies++, reply, reply_bytes);
            if (replies > 0)
                send(fd, output, reply_bytes * replies, MSG_NOSIGNAL);
        }
    }
}

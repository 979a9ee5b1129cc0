/* Runs one benchmark client and reports what it cost the client alone.
 *
 *   measure PROGRAM [ARGS...]
 *
 * The client's stdout and stderr pass through. When it exits, one line
 *   MEASURE exit=E user=U sys=S maxrss_kb=K wall=W
 * goes to stdout: user and system CPU seconds and peak resident set size from
 * wait4()'s rusage of that child (children it waited for included, which none
 * of ours have), and the wall-clock seconds from fork to exit. The server runs
 * in another process tree and is never counted.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double tv_seconds(struct timeval tv)
{
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s PROGRAM [ARGS...]\n", argv[0]);
        return 2;
    }
    fflush(stdout);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        execvp(argv[1], argv + 1);
        fprintf(stderr, "measure: cannot run %s: %s\n", argv[1], strerror(errno));
        _exit(127);
    }
    int status = 0;
    struct rusage ru;
    pid_t r;
    do {
        r = wait4(pid, &status, 0, &ru);
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
        perror("wait4");
        return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    double wall = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("MEASURE exit=%d user=%.6f sys=%.6f maxrss_kb=%ld wall=%.6f\n", code,
           tv_seconds(ru.ru_utime), tv_seconds(ru.ru_stime), ru.ru_maxrss, wall);
    return 0;
}

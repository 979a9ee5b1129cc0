/* Runs one benchmark client and reports what it cost the client alone.
 *
 *   measure PROGRAM [ARGS...]
 *
 * The client's stdout and stderr pass through. When it exits, one line
 *   MEASURE exit=E user=U sys=S maxrss_kb=K wall=W timeout=T
 * goes to stdout: user and system CPU seconds and peak resident set size from
 * wait4()'s rusage of that child (children it waited for included, which none
 * of ours have), and the wall-clock seconds from fork to exit. The server runs
 * in another process tree and is never counted.
 *
 * A client still running after BENCH_CLIENT_TIMEOUT seconds (default 600) is
 * killed (timeout=1, exit=137): a server that went away must not leave a
 * client retrying for hours.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t timed_out;

static void on_alarm(int sig)
{
    (void)sig;
    timed_out = 1;
}

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
    unsigned limit = 600;
    const char *env = getenv("BENCH_CLIENT_TIMEOUT");
    if (env && *env) {
        char *end;
        unsigned long v = strtoul(env, &end, 10);
        if (*end == '\0' && v > 0 && v < 86400)
            limit = (unsigned)v;
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
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm; /* no SA_RESTART: wait4 returns EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    alarm(limit);
    int status = 0, killed = 0;
    struct rusage ru;
    pid_t r;
    do {
        r = wait4(pid, &status, 0, &ru);
        if (r < 0 && errno == EINTR && timed_out && !killed) {
            fprintf(stderr, "measure: %s still running after %u s; killed\n", argv[1], limit);
            kill(pid, SIGKILL);
            killed = 1;
        }
    } while (r < 0 && errno == EINTR);
    alarm(0);
    if (r < 0) {
        perror("wait4");
        return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    double wall = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("MEASURE exit=%d user=%.6f sys=%.6f maxrss_kb=%ld wall=%.6f timeout=%d\n", code,
           tv_seconds(ru.ru_utime), tv_seconds(ru.ru_stime), ru.ru_maxrss, wall, killed);
    return 0;
}

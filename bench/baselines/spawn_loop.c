// The machine's limit for the throughput benchmark: posix_spawn + waitpid of a program in a loop,
// on every core. Prints spawns per second. Usage: spawn_loop N [program]
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 2000;
    char *prog = argc > 2 ? argv[2] : "/bin/true";
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    double start = now();
    for (long c = 0; c < cores; c++) {
        if (fork() == 0) {
            char *args[] = {prog, NULL};
            for (long i = c; i < n; i += cores) {
                pid_t pid;
                if (posix_spawn(&pid, prog, NULL, NULL, args, environ) != 0) { perror("posix_spawn"); _exit(1); }
                int status;
                waitpid(pid, &status, 0);
            }
            _exit(0);
        }
    }
    int status, failed = 0;
    while (wait(&status) > 0) failed |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    double elapsed = now() - start;
    printf("plain-spawn\t%ld spawns\t%.1f spawns/s\t(%ld processes in parallel)\n", n, n / elapsed, cores);
    return failed;
}

/* The pod sandbox's process (the kubelet's "pause" container), built locally by
 * quantcore.devcluster.images with `gcc -static`: it holds the pod's namespaces open, reaps
 * the children reparented to it (it is PID 1 when the pod shares one PID namespace) and
 * exits 0 on SIGINT or SIGTERM. It never reads input, writes files or opens sockets.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t stop_requested;

static void on_stop(int sig) {
    (void)sig;
    stop_requested = 1;
}

static void on_child(int sig) {
    (void)sig;
    int saved = errno;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    errno = saved;
}

static int install(int sig, void (*handler)(int)) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = handler;
    action.sa_flags = SA_RESTART | (sig == SIGCHLD ? SA_NOCLDSTOP : 0);
    sigemptyset(&action.sa_mask);
    return sigaction(sig, &action, NULL);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        puts("quantcore-pause 1");
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "usage: %s [--version]\n", argv[0]);
        return 2;
    }
    if (install(SIGINT, on_stop) || install(SIGTERM, on_stop) || install(SIGCHLD, on_child)) {
        perror("sigaction");
        return 1;
    }
    /* Outside PID 1 (a test, or a pod without a shared PID namespace) orphans of its own
     * children still come here to be reaped. */
    if (getpid() != 1 && prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
        perror("prctl(PR_SET_CHILD_SUBREAPER)");
    }
    sigset_t blocked, empty;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGINT);
    sigaddset(&blocked, SIGTERM);
    sigaddset(&blocked, SIGCHLD);
    sigemptyset(&empty);
    /* Signals stay blocked between checks, so a stop that arrives before sigsuspend is
     * delivered inside it and never lost. */
    sigprocmask(SIG_BLOCK, &blocked, NULL);
    while (!stop_requested) {
        sigsuspend(&empty);
    }
    return 0;
}

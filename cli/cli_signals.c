/* Interrupts for the command-line tool; see cli_signals.h. */
#include "cli_signals.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "kindling.h"

#define MAX_TEMPS 4
#define TEMP_LEN (PATH_MAX + 128)

static const int SIGNALS[] = {SIGINT, SIGTERM, SIGHUP};
static pthread_t main_thread;
static char temps[MAX_TEMPS][TEMP_LEN];
static volatile sig_atomic_t temp_count;
static char current[TEMP_LEN]; /* cli_signals_protect_current: one slot, replaced */
static volatile sig_atomic_t current_set;
static volatile sig_atomic_t deferring, caught;

/* Only async-signal-safe calls below (pthread_kill, pthread_self, unlink,
 * sigaction, raise). */
static void on_signal(int sig)
{
    if (deferring && !caught) { /* a flag: any thread may set it */
        caught = sig;
        return;
    }
    if (!pthread_equal(pthread_self(), main_thread)) {
        /* A BLAS or MPI thread got it: the main thread is the one that
         * writes files, so it must be the one stopped. */
        int e = errno;
        pthread_kill(main_thread, sig);
        errno = e;
        return;
    }
    for (int i = 0; i < temp_count; i++)
        unlink(temps[i]);
    if (current_set)
        unlink(current);
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, NULL);
    raise(sig); /* pending until the handler returns: then the default action ends the process */
}

void cli_signals_install(void)
{
    main_thread = pthread_self();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof SIGNALS / sizeof SIGNALS[0]; i++)
        sigaddset(&sa.sa_mask, SIGNALS[i]);
    sa.sa_flags = SA_RESTART;
    for (size_t i = 0; i < sizeof SIGNALS / sizeof SIGNALS[0]; i++) {
        struct sigaction old;
        /* A signal the parent set to be ignored (nohup, a daemon) stays ignored. */
        if (sigaction(SIGNALS[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN)
            continue;
        sigaction(SIGNALS[i], &sa, NULL);
    }
}

int cli_signals_remove_on_exit(const char *path)
{
    if (temp_count >= MAX_TEMPS || strlen(path) >= TEMP_LEN)
        return -1;
    /* Written before the count grows, so the handler never sees half a name. */
    snprintf(temps[temp_count], TEMP_LEN, "%s", path);
    temp_count = temp_count + 1;
    return 0;
}

void cli_signals_defer(int on) { deferring = on != 0; }

int cli_signals_stop(void *unused)
{
    (void)unused;
    return caught != 0;
}

int cli_signals_caught(void) { return caught; }

int cli_signals_protect_current(const char *path)
{
    char tmp[TEMP_LEN];
    if (kd_save_temp_path(path, tmp, sizeof tmp) != KD_OK)
        return -1;
    current_set = 0; /* the handler never sees half a name */
    snprintf(current, sizeof current, "%s", tmp);
    current_set = 1;
    return 0;
}

int cli_signals_protect_save(const char *path)
{
    char tmp[TEMP_LEN];
    if (kd_save_temp_path(path, tmp, sizeof tmp) != KD_OK)
        return -1;
    return cli_signals_remove_on_exit(tmp);
}

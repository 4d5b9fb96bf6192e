/* Interrupts (SIGINT, SIGTERM, SIGHUP) for the command-line tool. The
 * library never handles signals; the tool does, so that an interrupted
 * save leaves the previous file and nothing else:
 *
 *   - the temporaries a command may be writing are registered first
 *     (cli_signals_remove_on_exit); a signal that ends the program removes
 *     them before it dies with that signal (exit status 128 + the signal);
 *   - the handler runs on the main thread only (another thread that
 *     receives the signal passes it on), so the removal cannot race with
 *     the main thread creating or renaming the file;
 *   - while training (cli_signals_defer), the first signal only asks the
 *     training loop to stop at the next step boundary (cli_signals_stop is
 *     its kd_stop_fn), where it saves a checkpoint of that position: a
 *     preempted job (Spark, Slurm and Kubernetes send SIGTERM) resumes with
 *     nothing lost. A second signal ends the program at once, as above.
 *
 * Process-wide by nature (a signal disposition is); the library keeps no
 * such state. */
#ifndef KD_CLI_SIGNALS_H
#define KD_CLI_SIGNALS_H

/* Installs the handlers; call once from the main thread. */
void cli_signals_install(void);
/* Remove `path` if a signal ends the program (at most 4 paths; a path too
 * long to store is refused with -1). Returns 0. */
int cli_signals_remove_on_exit(const char *path);
/* Register the temporary that a Kindling save of `path` writes
 * (kd_save_temp_path). Returns 0, or -1 if its name is too long. */
int cli_signals_protect_save(const char *path);
/* The same for a save whose name changes from one save to the next (a
 * rotating checkpoint copy): one slot, each call replaces the last. */
int cli_signals_protect_current(const char *path);
/* on != 0: a signal asks for a stop instead of ending the program. */
void cli_signals_defer(int on);
/* kd_stop_fn: 1 once a signal asked for a stop. */
int cli_signals_stop(void *unused);
/* The signal that asked for a stop (SIGINT, SIGTERM, SIGHUP), or 0. */
int cli_signals_caught(void);

#endif

/* The tool's sub-commands. Each takes its own argv (argv[0] is the command
 * name) and returns the process exit code: 0 ok, 1 runtime failure, 2 usage. */
#ifndef KD_CLI_COMMANDS_H
#define KD_CLI_COMMANDS_H

int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_predict(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_plot(int argc, char **argv);

#endif

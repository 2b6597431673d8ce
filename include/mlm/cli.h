/*
 * The subcommands of the mlmgpu program (src/host/cli/, main.c dispatches). Each
 * takes the arguments after its name, prints its own --help, and returns a process
 * exit code (2 for bad input).
 */
#ifndef MLM_CLI_H
#define MLM_CLI_H

int mlm_cmd_train(int argc, char **argv);     // src/host/cli/cmd_train.c
int mlm_cmd_tokenize(int argc, char **argv);  // src/host/cli/cmd_tokenize.c
int mlm_cmd_vocab(int argc, char **argv);     // src/host/cli/cmd_vocab.c
int mlm_cmd_prepare(int argc, char **argv);   // src/host/cli/cmd_prepare.c
int mlm_cmd_eval(int argc, char **argv);      // src/host/cli/cmd_eval.c
int mlm_cmd_fill_mask(int argc, char **argv); // src/host/cli/cmd_fill_mask.c
int mlm_cmd_plot(int argc, char **argv);      // src/host/cli/cmd_plot.c

/* The backend for --device auto|cpu|cuda: auto takes a usable GPU, else the CPU,
 * and says which; cuda without a usable GPU exits 2 with the reason. */
struct mlm_backend *mlm_choose_backend(const char *device, int threads);

/* Prints "mlmgpu: error: MSG\n\nUSAGE" to stderr and exits with code 2. */
_Noreturn void mlm_usage_error(const char *usage, const char *fmt, const char *arg);

/* The value of option opt as a whole number in [lo, hi]; anything else is a usage
 * error naming the option and the value. */
long mlm_cli_int(const char *usage, const char *opt, const char *value, long lo, long hi);

#endif

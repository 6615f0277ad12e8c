package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// Exit codes, the same for every command (docs/cli.md#exit-codes):
//
//	0  done
//	1  the server said no (a 4xx answer), or what was checked is bad (a
//	   broken audit chain, a config with problems), or a local failure
//	2  usage: unknown command or flag, missing or extra arguments, an
//	   unreadable client config
//	3  the server could not be reached, or it failed (a 5xx answer)
//
// and fangd serve's 75 (exitClusterExcluded, config_cluster.go).
const (
	exitOK          = 0
	exitRefused     = 1
	exitUsage       = 2
	exitUnreachable = 3
)

// exitError ends the process with a status code and no further message.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// usageError is a command line that cannot be run as typed: exit 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// run executes one command line and returns the process's exit status.
// Errors are printed here, once, on stderr, with every secret the client
// holds scrubbed from them.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCommand()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	code, msg := classify(err)
	if msg != "" {
		fmt.Fprintln(stderr, "fangd: "+printable(scrubSecrets(msg)))
	}
	if code == exitUsage && msg != "" && cmd != nil {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return code
}

// classify maps an error to its exit code and the message to print.
func classify(err error) (int, string) {
	var (
		exit    exitError
		usage   *usageError
		server  *serverError
		unreach *unreachableError
	)
	switch {
	case errors.As(err, &exit):
		return int(exit), ""
	case errors.As(err, &usage):
		return exitUsage, usage.msg
	case errors.As(err, &server):
		if server.Status >= 500 {
			return exitUnreachable, err.Error()
		}
		return exitRefused, err.Error()
	case errors.As(err, &unreach):
		return exitUnreachable, err.Error()
	case strings.HasPrefix(err.Error(), "unknown command "):
		// cobra's own error for `fangd bogus`.
		return exitUsage, err.Error()
	}
	return exitRefused, err.Error()
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "fangd",
		Short: "The LibreFang Communication & Network API daemon, and its command-line client",
		Long: `fangd serves the LibreFang Communication & Network API (fangd serve), and is
the command-line client of a running daemon: the other verbs below speak its
HTTP API. The client finds the daemon from --url/--api-key, then FANGD_URL /
FANGD_API_KEY, then the config file fangd serve reads (api_listen, api_key).

Exit codes: 0 ok, 1 the server said no (4xx) or the check failed, 2 usage
error, 3 the server cannot be reached or failed (5xx). See docs/cli.md.`,
		Example: `  fangd serve                          # run the daemon on 127.0.0.1:4545
  fangd agents create ops --model groq/llama-3.3-70b-versatile
  fangd send ops "what changed today?"
  fangd events tail --type 'approval.*'
  fangd completion bash > /etc/bash_completion.d/fangd`,
		Version:       version,
		SilenceErrors: true,
		SilenceUsage:  true,
		// A bare `fangd` is a usage error (exit 2), as it always was.
		RunE: func(cmd *cobra.Command, args []string) error {
			cmd.SetOut(cmd.ErrOrStderr())
			cmd.Usage()
			return exitError(exitUsage)
		},
	}
	// `fangd --version` and `-v` print what `fangd version` prints.
	root.SetVersionTemplate(readBuildInfo().String() + "\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err.Error()} })
	root.AddGroup(&cobra.Group{ID: "daemon", Title: "Daemon (local):"},
		&cobra.Group{ID: "client", Title: "Client (speak to a running daemon):"},
		&cobra.Group{ID: "other", Title: "Other:"})
	for _, c := range []*cobra.Command{serveCmd(), configCmd(), vaultCmd(), backupCmd(), restoreCmd(), versionCmd()} {
		c.GroupID = "daemon"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{agentsCmd(), sendCmd(), eventsCmd(), logsCmd(), approvalsCmd(),
		channelsCmd(), mcpCmd(), auditCmd(), peersCmd()} {
		c.GroupID = "client"
		root.AddCommand(c)
	}
	root.SetHelpCommandGroupID("other")
	root.SetCompletionCommandGroupID("other")
	return root
}

// group is a command that only holds verbs: with none it prints its help
// on stderr and exits 2; an unknown verb is a usage error too (cobra would
// print the help and exit 0).
func group(use, short, example string, verbs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{
		Use:     use,
		Short:   short,
		Example: example,
		Args:    cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unknown command %q for %q", args[0], cmd.CommandPath())
			}
			cmd.SetOut(cmd.ErrOrStderr())
			cmd.Usage()
			return exitError(exitUsage)
		},
	}
	c.AddCommand(verbs...)
	return c
}

// args wraps cobra's argument checks so that their failures exit 2.
func args(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if err := check(cmd, a); err != nil {
			return &usageError{err.Error()}
		}
		return nil
	}
}

func serveCmd() *cobra.Command {
	c := &serveCommand{}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the daemon (SIGHUP reloads the config, SIGINT/SIGTERM stop it)",
		Example: `  fangd serve
  fangd serve --home /var/lib/fangd --listen 127.0.0.1:4545
  fangd serve --cluster etcd://127.0.0.1:2379 --node-name n1`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error { return c.Run(cmd.Context()) },
	}
	cmd.Flags().StringVar(&c.listen, "listen", "", "listen address (default api_listen, 127.0.0.1:4545)")
	cmd.Flags().StringVar(&c.home, "home", "", "home directory (default $FANGD_HOME or ~/.fangd)")
	cmd.Flags().StringVar(&c.config, "config", "", "config file (default $FANGD_HOME/config.toml)")
	cmd.Flags().StringVar(&c.cluster, "cluster", "", "cluster mode: etcd://HOST:2379[,HOST:2379], etcds:// for TLS to etcd (default [cluster] etcd; none: single node)")
	cmd.Flags().StringVar(&c.clusterName, "cluster-name", "", "cluster name (default [cluster] name, \"fangd\")")
	cmd.Flags().StringVar(&c.nodeName, "node-name", "", "this node's name in the cluster (default [cluster] node_name, else the name kept in the home: host name and API port of its first start)")
	return cmd
}

func configCmd() *cobra.Command {
	c := &configCheckCommand{}
	check := &cobra.Command{
		Use:   "check",
		Short: "Validate a config file without starting (exit 1 with one line per problem)",
		Example: `  fangd config check
  fangd config check --config ./config.toml`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c.out, c.errOut = cmd.OutOrStdout(), cmd.ErrOrStderr()
			return c.Run(cmd.Context())
		},
	}
	check.Flags().StringVar(&c.home, "home", "", "home directory (default $FANGD_HOME or ~/.fangd)")
	check.Flags().StringVar(&c.config, "config", "", "config file (default $FANGD_HOME/config.toml)")
	return group("config", "Check the config file", "  fangd config check", check)
}

func vaultCmd() *cobra.Command {
	c := &vaultSetCommand{in: os.Stdin}
	set := &cobra.Command{
		Use:   "set NAME",
		Short: `Store a config secret ("vault:NAME") in a stopped daemon's vault, read from stdin`,
		Long: `Store a secret that config.toml names as "vault:NAME" in a stopped daemon's
vault. The secret is the first line of stdin, so that it never appears in a
command line or a shell history.`,
		Example: `  fangd vault set ofp_secret < secret.txt
  printf '%s\n' "$SECRET" | fangd vault set github_client_secret --home /var/lib/fangd`,
		// The name is checked by Run, as it always was (exit 1).
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, a []string) error { return c.Run(cmd.Context(), a) },
	}
	set.Flags().StringVar(&c.home, "home", "", "home directory (default $FANGD_HOME or ~/.fangd)")
	return group("vault", "Store config secrets in a stopped daemon's vault", "  fangd vault set ofp_secret < secret.txt", set)
}

func backupCmd() *cobra.Command {
	c := &backupCommand{}
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "Back up a home (through the daemon when it runs)",
		Example: `  fangd backup --out fangd-$(date +%F).backup
  fangd backup --out b.backup --url http://127.0.0.1:4545 --key "$FANGD_API_KEY"`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error { return c.Run(cmd.Context()) },
	}
	cmd.Flags().StringVar(&c.out, "out", "", "backup file to write (required; must not exist)")
	cmd.Flags().StringVar(&c.home, "home", "", "home directory (default $FANGD_HOME or ~/.fangd)")
	cmd.Flags().StringVar(&c.url, "url", "", "a running daemon's base URL (default: its api_listen, when the home is in use)")
	cmd.Flags().StringVar(&c.key, "key", "", "API key for --url (default $FANGD_API_KEY or the config's api_key)")
	return cmd
}

func restoreCmd() *cobra.Command {
	c := &restoreCommand{}
	cmd := &cobra.Command{
		Use:     "restore",
		Short:   "Restore a backup into a new, empty home",
		Example: `  fangd restore --in fangd-2026-12-07.backup --home /var/lib/fangd-restored`,
		Args:    args(cobra.NoArgs),
		RunE:    func(cmd *cobra.Command, _ []string) error { return c.Run(cmd.Context()) },
	}
	cmd.Flags().StringVar(&c.in, "in", "", "backup file to restore (required)")
	cmd.Flags().StringVar(&c.home, "home", "", "new home directory: absent or empty (required)")
	return cmd
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print the version, commit and toolchain of this binary",
		Example: "  fangd version",
		Args:    args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), readBuildInfo())
			return nil
		},
	}
}

// stdout is where a command's results go (os.Stdout outside tests).
func stdout(cmd *cobra.Command) io.Writer { return cmd.OutOrStdout() }

// stderr is where notes and warnings go.
func stderr(cmd *cobra.Command) io.Writer { return cmd.ErrOrStderr() }

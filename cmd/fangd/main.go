// Command fangd is the LibreFang Communication & Network API daemon.
//
//	fangd serve [--listen ADDR] [--home DIR] [--config FILE]
//	fangd config check [--config FILE] [--home DIR]
//	fangd audit verify [--home DIR]
//	fangd audit accept --reason TEXT [--home DIR]
//	fangd backup --out FILE [--home DIR | --url URL --key KEY]
//	fangd restore --in FILE --home NEWHOME
//	fangd version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

const usage = `usage:
  fangd serve [--listen ADDR] [--home DIR] [--config FILE]   run the daemon
                                             (SIGHUP reloads the config, SIGINT/SIGTERM stop it)
  fangd config check [--config FILE] [--home DIR]            validate a config file without starting
  fangd audit verify [--home DIR]                            check a stopped daemon's audit log
  fangd audit accept --reason TEXT [--home DIR]              record an audit anchor mismatch and re-anchor (daemon stopped)
  fangd vault set NAME [--home DIR] < secret                 store a config secret ("vault:NAME") in a stopped daemon's vault
  fangd backup --out FILE [--home DIR | --url URL --key KEY] back up a home (through the daemon when it runs)
  fangd restore --in FILE --home NEWHOME                     restore a backup into a new, empty home
  fangd version                                              print the version
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:])
	var exit exitError
	switch {
	case errors.As(err, &exit):
		os.Exit(int(exit))
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case err != nil:
		fmt.Fprintln(os.Stderr, "fangd:", err)
		os.Exit(1)
	}
}

// exitError ends the process with a status code and no further message.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return exitError(2)
	}
	switch args[0] {
	case "serve":
		return (&serveCommand{}).Run(ctx, args[1:])
	case "config":
		if len(args) > 1 && args[1] == "check" {
			return (&configCheckCommand{out: os.Stdout, errOut: os.Stderr}).Run(ctx, args[2:])
		}
	case "audit":
		if len(args) > 1 && args[1] == "verify" {
			return (&auditVerifyCommand{}).Run(ctx, args[2:])
		}
		if len(args) > 1 && args[1] == "accept" {
			return (&auditAcceptCommand{}).Run(ctx, args[2:])
		}
	case "vault":
		if len(args) > 1 && args[1] == "set" {
			return (&vaultSetCommand{in: os.Stdin}).Run(ctx, args[2:])
		}
	case "backup":
		return (&backupCommand{}).Run(ctx, args[1:])
	case "restore":
		return (&restoreCommand{}).Run(ctx, args[1:])
	case "version", "--version", "-v":
		fmt.Println(readBuildInfo())
		return nil
	case "help", "-h", "--help":
		fmt.Print(usage)
		return nil
	}
	fmt.Fprint(os.Stderr, usage)
	return exitError(2)
}

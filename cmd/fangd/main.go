// Command fangd is the LibreFang Communication & Network API daemon, and
// the command-line client of a running one (docs/cli.md).
//
//	fangd serve [--listen ADDR] [--home DIR] [--config FILE]
//	fangd config check [--config FILE] [--home DIR]
//	fangd audit verify --home DIR | --offline      (a stopped daemon's chain)
//	fangd audit accept --reason TEXT [--home DIR]
//	fangd vault set NAME [--home DIR] < secret
//	fangd backup --out FILE [--home DIR | --url URL --key KEY]
//	fangd restore --in FILE --home NEWHOME
//	fangd version
//
// and the client verbs, which speak the HTTP API of a running daemon:
// agents, send, events, logs, approvals, channels, mcp, audit verify|export,
// peers (cli*.go). The commands are cobra commands; exit codes are in
// cli.go.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

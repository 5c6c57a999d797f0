// Command ferry is the one binary of ferry: the worker, the dashboard, and a
// command line to enqueue transfers, follow them, and call S3 directly.
//
// main only wires: flags, environment and the config file become the Config
// structs of the worker, dashboard, storage and tasks packages.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	a := &app{
		stdin:     os.Stdin,
		stdout:    os.Stdout,
		stderr:    os.Stderr,
		getenv:    os.Getenv,
		stdoutTTY: isTerminal(os.Stdout),
		stderrTTY: isTerminal(os.Stderr),
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd(a).ExecuteContext(ctx)
	stop()
	if a.log != nil {
		_ = a.log.Sync()
	}
	if err != nil {
		printError(a.stderr, err)
	}
	os.Exit(exitCode(err))
}

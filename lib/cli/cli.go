// Package cli is the common command-line frame of the kubelink binaries:
// --help and --version handling on top of pflag, so that each cmd/<binary>
// main reads like its flag list.
package cli

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/pflag"

	"github.com/kubelink/kubelink/lib/buildinfo"
)

// Command is one kubelink binary.
type Command struct {
	// Name is the binary name, e.g. "kubelink-broker".
	Name string
	// Short is a one-line description shown by --help.
	Short string
	// Flags are registered by the binary before Parse.
	Flags *pflag.FlagSet

	version bool
}

// New returns a Command with --version registered. pflag registers --help.
func New(name, short string) *Command {
	c := &Command{Name: name, Short: short, Flags: pflag.NewFlagSet(name, pflag.ContinueOnError)}
	c.Flags.BoolVar(&c.version, "version", false, "print the version and exit")
	c.Flags.SortFlags = true
	return c
}

// Parse parses args. It returns done=true when --help or --version was
// handled (and printed to out); the caller then exits with code 0.
func (c *Command) Parse(args []string, out io.Writer) (done bool, err error) {
	c.Flags.SetOutput(out)
	c.Flags.Usage = func() {
		fmt.Fprintf(out, "%s - %s\n\nUsage:\n  %s [flags]\n\nFlags:\n%s", c.Name, c.Short, c.Name, c.Flags.FlagUsages())
	}
	if err := c.Flags.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return true, nil
		}
		return false, fmt.Errorf("%s: %w (see --help)", c.Name, err)
	}
	if c.version {
		fmt.Fprintln(out, buildinfo.String(c.Name))
		return true, nil
	}
	if c.Flags.NArg() > 0 {
		return false, fmt.Errorf("%s: unexpected arguments %q (see --help)", c.Name, c.Flags.Args())
	}
	return false, nil
}

// Main parses os.Args, handles --help/--version, then calls run and exits with
// a non-zero code on error.
func (c *Command) Main(run func() error) {
	done, err := c.Parse(os.Args[1:], os.Stdout)
	if err == nil && !done {
		err = run()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

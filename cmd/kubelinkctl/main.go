// kubelinkctl installs kubelink into a cluster and reports on it. The same
// binary, installed as kubectl-kubelink, is the kubectl plugin
// `kubectl kubelink`.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
)

// globals are the flags every command has.
type globals struct {
	kube    *genericclioptions.ConfigFlags
	timeout time.Duration
	output  string
	out     io.Writer
	errOut  io.Writer
}

// progress prints a line about a long wait (to stderr, so -o json stays clean).
func (g *globals) progress(format string, args ...any) {
	fmt.Fprintf(g.errOut, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// commandName is how the user called us: `kubectl kubelink` as a plugin.
func commandName() string {
	if strings.HasPrefix(filepath.Base(os.Args[0]), "kubectl-kubelink") {
		return "kubectl kubelink"
	}
	return "kubelinkctl"
}

func newRoot(out, errOut io.Writer) *cobra.Command {
	g := &globals{kube: genericclioptions.NewConfigFlags(true), out: out, errOut: errOut}
	name := commandName()
	root := &cobra.Command{
		Use:   name,
		Short: "Install kubelink into a cluster and see its state",
		Long: `kubelinkctl installs kubelink, which connects the service networks of
several Kubernetes clusters over an encrypted tunnel, and reports on it.`,
		Example: fmt.Sprintf(`  # install into the cluster of context prod-eu, as mesh member 192.168.0.11
  %[1]s install --context prod-eu --name eu --mesh-cidr 192.168.0.0/24 --address 192.168.0.11

  # the client version and the version installed in the cluster
  %[1]s version --context prod-eu`, name),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentPreRun = func(*cobra.Command, []string) {
		// Several kubeconfig files (join and show reach several clusters)
		// are merged as kubectl merges $KUBECONFIG.
		if kc := *g.kube.KubeConfig; strings.ContainsRune(kc, filepath.ListSeparator) {
			os.Setenv("KUBECONFIG", kc)
			*g.kube.KubeConfig = ""
		}
	}
	root.SetOut(out)
	root.SetErr(errOut)
	pf := root.PersistentFlags()
	pf.StringVar(g.kube.KubeConfig, "kubeconfig", "", "path to the kubeconfig file, or several separated by '"+string(filepath.ListSeparator)+"' as in $KUBECONFIG (default: $KUBECONFIG or ~/.kube/config)")
	pf.StringVar(g.kube.Context, "context", "", "the kubeconfig context to use (default: the current context)")
	pf.StringVarP(g.kube.Namespace, "namespace", "n", "kubelink", "the namespace kubelink is installed in")
	pf.DurationVar(&g.timeout, "timeout", 5*time.Minute, "how long the whole command may take, waits included, before it gives up")
	root.AddCommand(newVersion(g), newInstall(g), newJoin(g), newShow(g), newVerify(g), newDiagnose(g), newLeave(g), newUninstall(g), newBenchmark(g), newToken(g))
	return root
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRoot(os.Stdout, os.Stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		var ue usageError
		fmt.Fprintf(os.Stderr, "Error: %v\n", err)
		if errors.As(err, &ue) {
			fmt.Fprintf(os.Stderr, "Run '%s --help' for the flags and an example.\n", ue.cmd)
		}
		os.Exit(1)
	}
}

// usageError is a wrong or missing flag: the message says which, and the
// user is pointed at --help.
type usageError struct {
	cmd string
	err error
}

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(cmd *cobra.Command, format string, args ...any) error {
	return usageError{cmd: cmd.CommandPath(), err: fmt.Errorf(format, args...)}
}

module github.com/kubelink/kubelink/cmd/verifier

go 1.26.0

require github.com/kubelink/kubelink/lib v0.0.0

require (
	github.com/spf13/pflag v1.0.6 // indirect
	golang.org/x/sys v0.48.0 // indirect
)

replace github.com/kubelink/kubelink/lib => ../../lib

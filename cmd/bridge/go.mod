module github.com/kubelink/kubelink/cmd/bridge

go 1.26.0

require github.com/kubelink/kubelink/lib v0.0.0

require github.com/spf13/pflag v1.0.6 // indirect

replace github.com/kubelink/kubelink/lib => ../../lib

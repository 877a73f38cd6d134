module github.com/kubelink/kubelink/e2e

go 1.26.0

require github.com/kubelink/kubelink/lib v0.0.0

replace github.com/kubelink/kubelink/lib => ../lib

module github.com/kubelink/kubelink/e2e

go 1.26.0

require github.com/kubelink/kubelink/lib v0.0.0

require sigs.k8s.io/e2e-framework v0.6.0 // indirect

replace github.com/kubelink/kubelink/lib => ../lib

module github.com/kubelink/kubelink/lab/tools/runc-capfilter

go 1.26

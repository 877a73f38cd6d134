// Package chart holds the tests of the Helm chart deploy/chart/kubelink:
// helm lint with the lab's values, what the default values render (labels,
// resources, images, privileges), every switch of values.yaml, the values
// the chart refuses, and a least-privilege guard that compares the rendered
// RBAC with a literal table, so that widening a permission fails a test
// until the table is changed on purpose. They run helm template (built by
// `make tools`), no cluster.
package chart

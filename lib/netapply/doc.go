// Package netapply makes the kernel of the current network namespace match
// the desired state computed by lib/mesh: iptables chains and hooks, routes
// and the policy rule of kubelink's route table, addresses and links.
//
// Every applier owns only what it marks as its own (chain names, the route
// protocol number, the route table, its own device) and leaves everything
// else alone, so it can share a namespace with the CNI, kube-proxy and the
// administrator. Appliers are idempotent: Set(desired) repairs whatever drifted
// and CleanUp removes what they made.
//
// "Current network namespace" means the one of the calling OS thread: netlink
// sockets and iptables subprocesses are created by the caller's thread. A
// process that runs in one namespace needs no care; tests run appliers inside
// nstest.Namespace.Do.
package netapply

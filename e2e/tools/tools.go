//go:build tools

// Package tools pins the real Kubernetes and etcd components that Paver's
// end-to-end tests run against. It is never compiled: the blank imports only
// keep `go mod tidy` from dropping the requirements (and their go.sum lines).
// Build the binaries with ../bin.sh build.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)

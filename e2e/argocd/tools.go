//go:build tools

// Package tools pins Argo CD for Paver's e2e tests; never compiled. Build
// with ../bin.sh build-argocd.
package tools

import (
	_ "github.com/argoproj/argo-cd/v3/cmd"
)

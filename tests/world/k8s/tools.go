//go:build tools

// The Kubernetes control plane of the local world, built from the Kubernetes Go modules at the
// version go.mod pins (build.sh): go mod tidy keeps their dependencies because of these imports.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)

// Command kube-testenv is PolicyGuard's test control plane: one binary that runs a real
// kube-apiserver, an embedded etcd, or kubectl, chosen by its first argument. The TypeScript
// harness in tests/controlplane starts etcd and kube-apiserver as two processes (as envtest
// does), so a test can restart the API server while etcd keeps the data.
//
//	kube-testenv etcd --data-dir D --listen-client-url http://127.0.0.1:P --listen-peer-url http://127.0.0.1:Q
//	kube-testenv kube-apiserver <kube-apiserver flags>
//	kube-testenv kubectl <kubectl args>
//	kube-testenv kube-controller-manager|kube-scheduler|kubelet <flags>   (tests/e2e's one-node cluster)
//	kube-testenv version
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

func usage() {
	fmt.Fprintf(os.Stderr, "usage: %s etcd|kube-apiserver|kubectl|kube-controller-manager|kube-scheduler|kubelet|version [args...]\n", filepath.Base(os.Args[0]))
}

func main() {
	// Also dispatch on the program name, so symlinks named etcd / kube-apiserver / kubectl work
	// like the binaries of a KUBEBUILDER_ASSETS directory.
	name := strings.TrimSuffix(filepath.Base(os.Args[0]), ".exe")
	var sub string
	var args []string
	switch name {
	case "etcd", "kube-apiserver", "kubectl", "kube-controller-manager", "kube-scheduler", "kubelet":
		sub, args = name, os.Args[1:]
	default:
		if len(os.Args) < 2 {
			usage()
			os.Exit(2)
		}
		sub, args = os.Args[1], os.Args[2:]
	}
	switch sub {
	case "etcd":
		os.Exit(runEtcd(args))
	case "kube-apiserver":
		os.Exit(runAPIServer(args))
	case "kubectl":
		os.Exit(runKubectl(args))
	case "kube-controller-manager":
		os.Exit(runControllerManager(args))
	case "kube-scheduler":
		os.Exit(runScheduler(args))
	case "kubelet":
		os.Exit(runKubelet(args))
	case "version":
		printVersion()
	default:
		usage()
		os.Exit(2)
	}
}

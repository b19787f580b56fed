package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register" // as upstream cmd/kube-apiserver
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

// runAPIServer is upstream cmd/kube-apiserver's main with the arguments passed explicitly.
func runAPIServer(args []string) int {
	exitWithParent()
	os.Args = append([]string{"kube-apiserver"}, args...)
	command := app.NewAPIServerCommand()
	command.SetArgs(args)
	return cli.Run(command)
}

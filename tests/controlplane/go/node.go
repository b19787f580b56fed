package main

import (
	"context"
	"os"
	_ "time/tzdata" // as upstream cmd/kube-controller-manager: CronJob time zones

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

// The node components of the one-node test cluster (tests/e2e, docs/e2e.md): upstream
// cmd/kube-controller-manager, cmd/kube-scheduler and cmd/kubelet, built from the same
// k8s.io/kubernetes module as the API server, each run as its own process.

func runControllerManager(args []string) int {
	return runComponent("kube-controller-manager", controllermanager.NewControllerManagerCommand(), args)
}

func runScheduler(args []string) int {
	return runComponent("kube-scheduler", scheduler.NewSchedulerCommand(), args)
}

func runKubelet(args []string) int {
	return runComponent("kubelet", kubelet.NewKubeletCommand(context.Background()), args)
}

// runComponent is upstream's main for one component, with the arguments passed explicitly.
func runComponent(name string, command *cobra.Command, args []string) int {
	exitWithParent()
	os.Args = append([]string{name}, args...)
	command.SetArgs(args)
	return cli.Run(command)
}

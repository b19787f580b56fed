package main

import (
	"fmt"

	"go.etcd.io/etcd/api/v3/version"
	kversion "k8s.io/component-base/version"
)

func printVersion() {
	fmt.Printf("kubernetes %s\netcd %s\n", kversion.Get().GitVersion, version.Version)
}

package main

import (
	"os"
	"syscall"
)

// exitWithParent asks Linux to send SIGTERM to this process when the process that started it
// dies (PR_SET_PDEATHSIG), so a crashed or SIGKILLed test runner leaves no etcd or apiserver
// behind. Only when KUBE_TESTENV_EXIT_WITH_PARENT=1 (the TypeScript harness sets it), so a
// developer running the binary from a shell is not surprised.
func exitWithParent() {
	if os.Getenv("KUBE_TESTENV_EXIT_WITH_PARENT") != "1" {
		return
	}
	ppid := os.Getppid()
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0)
	if os.Getppid() != ppid { // the parent died before the call took effect
		os.Exit(1)
	}
}

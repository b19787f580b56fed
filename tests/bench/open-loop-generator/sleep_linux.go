package main

import (
	"syscall"
	"time"
)

// preciseTimers cuts this thread's timer slack from the default 50 µs to 1 µs (prctl
// PR_SET_TIMERSLACK), so a sleep ends when asked.
func preciseTimers() {
	const prSetTimerslack = 29
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerslack, 1000, 0)
}

// sleepUntil blocks this OS thread until t with nanosleep, not the Go scheduler's timers
// (whose poller waits in whole milliseconds).
func sleepUntil(t time.Time) {
	for d := time.Until(t); d > 0; d = time.Until(t) {
		ts := syscall.NsecToTimespec(int64(d))
		_ = syscall.Nanosleep(&ts, nil)
	}
}

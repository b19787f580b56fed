//go:build !linux

package main

import "time"

func preciseTimers() {}

// sleepUntil waits with the Go scheduler's timers: coarser than on Linux; the printed
// generator lag shows by how much.
func sleepUntil(t time.Time) { time.Sleep(time.Until(t)) }

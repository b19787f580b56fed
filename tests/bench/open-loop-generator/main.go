// Command open-loop-generator is the load generator of `npm run bench -- latency`
// (tests/bench/open-loop.ts builds and runs it; docs/performance.md): it sends HTTP/1.1
// requests on a fixed schedule, the i-th at start + i/rate, whether or not earlier ones were
// answered, and measures each from its intended send time, so a server that stalls is not
// hidden by a generator that waits for it ("coordinated omission").
//
// It is written in Go, not TypeScript, because the latency target (p99 ≤ 2 ms) is the size of
// a Node generator's own error: Node's timers fire on a 1 ms grid and its event loop parses
// answers between sends, which put 0.6 ms at p50 and ~2 ms at p99 into every figure, raw
// node:http's included. Here one OS thread does nothing but wait (nanosleep, with the timer
// slack cut to 1 µs on Linux) and write, and each connection has its own reader.
//
// Usage: open-loop-generator '<json spec>' prints one JSON result on stdout (types below).
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// spec is what to send: OpenLoopSpec in tests/bench/open-loop.ts.
type spec struct {
	URL         string            `json:"url"`
	Headers     map[string]string `json:"headers"`
	Bodies      []string          `json:"bodies"` // sent in turn
	Rate        float64           `json:"rate"`   // requests per second, offered whatever the server does
	DurationSec float64           `json:"durationSec"`
	WarmupSec   float64           `json:"warmupSec"`  // sent on the same schedule first, not measured
	MaxSockets  int               `json:"maxSockets"` // beyond them requests wait for a free one, and that wait counts
	// How long after its intended send time a request may wait for its answer before it counts
	// as an error (and its connection is closed), so a server that stops answering ends the run.
	AnswerTimeoutSec float64 `json:"answerTimeoutSec"`
}

// result covers the measured requests, in schedule order.
type result struct {
	// Milliseconds from the intended send time to the last byte of the answer; -1 when there was none.
	LatenciesMs []float64 `json:"latenciesMs"`
	// Milliseconds from the intended send time to the generator being ready to send (before it
	// takes a connection, whose wait is the server's doing and counts in the latency): the
	// generator's own error.
	LagsMs      []float64 `json:"lagsMs"`
	Non2xx      int64     `json:"non2xx"`
	Errors      int64     `json:"errors"`
	Connections int64     `json:"connections"`
}

type job struct {
	i        int
	intended time.Time
}

type conn struct {
	net.Conn
	jobs chan job
}

type run struct {
	spec spec
	host string
	warm int
	idle chan *conn
	// One token per open connection (capacity maxSockets): taken to dial, given back when the
	// connection closes, so a send waiting for a connection wakes for either.
	slots    chan struct{}
	dialed   atomic.Int64
	non2xx   atomic.Int64
	errors   atomic.Int64
	inflight sync.WaitGroup
	res      result
}

func main() {
	if len(os.Args) != 2 {
		fail("usage: open-loop-generator '<json spec>'")
	}
	var s spec
	if err := json.Unmarshal([]byte(os.Args[1]), &s); err != nil {
		fail("the spec is not JSON of the expected shape: %v", err)
	}
	u, err := url.Parse(s.URL)
	switch {
	case err != nil || u.Scheme != "http" || u.Port() == "":
		fail("url must be http://host:port/path, got %q", s.URL)
	case s.Rate <= 0 || s.DurationSec <= 0 || s.WarmupSec < 0 || s.MaxSockets < 1 || s.AnswerTimeoutSec <= 0 || len(s.Bodies) == 0:
		fail("rate, durationSec, maxSockets and answerTimeoutSec must be positive, warmupSec not negative, and bodies not empty")
	}
	requests := make([][]byte, len(s.Bodies))
	for k, body := range s.Bodies {
		requests[k] = requestBytes(u, s.Headers, body)
	}

	total := int(math.Round(s.Rate * (s.WarmupSec + s.DurationSec)))
	r := &run{spec: s, host: u.Host, warm: int(math.Round(s.Rate * s.WarmupSec)), idle: make(chan *conn, s.MaxSockets), slots: make(chan struct{}, s.MaxSockets)}
	measured := total - r.warm
	r.res.LatenciesMs = make([]float64, measured)
	r.res.LagsMs = make([]float64, measured)
	for k := range r.res.LatenciesMs {
		r.res.LatenciesMs[k] = -1
	}

	// This goroutine keeps its OS thread to itself: it sleeps precisely and sends.
	runtime.LockOSThread()
	preciseTimers()
	interval := float64(time.Second) / s.Rate
	start := time.Now().Add(50 * time.Millisecond)
	for i := 0; i < total; i++ {
		intended := start.Add(time.Duration(float64(i) * interval))
		sleepUntil(intended)
		if i >= r.warm {
			r.res.LagsMs[i-r.warm] = ms(time.Since(intended))
		}
		c, err := r.conn()
		if err != nil {
			r.count(i, &r.errors)
			continue
		}
		r.inflight.Add(1)
		c.jobs <- job{i, intended}
		// A failed write shows as a failed read of the answer, counted there.
		_, _ = c.Write(requests[i%len(requests)])
	}
	r.inflight.Wait()
	r.res.Non2xx, r.res.Errors, r.res.Connections = r.non2xx.Load(), r.errors.Load(), r.dialed.Load()
	if err := json.NewEncoder(os.Stdout).Encode(&r.res); err != nil {
		fail("writing the result: %v", err)
	}
}

// requestBytes is one POST as a keep-alive HTTP/1.1 client sends it.
func requestBytes(u *url.URL, headers map[string]string, body string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: %s\r\n", u.RequestURI(), u.Host)
	for name, value := range headers {
		if lower := strings.ToLower(name); lower != "host" && lower != "content-length" {
			fmt.Fprintf(&b, "%s: %s\r\n", name, value)
		}
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(body), body)
	return []byte(b.String())
}

// conn returns an idle connection, else a new one while fewer than maxSockets are open, else
// waits for a connection to become idle or to close (making room for a new one).
func (r *run) conn() (*conn, error) {
	select {
	case c := <-r.idle:
		return c, nil
	default:
	}
	select {
	case c := <-r.idle:
		return c, nil
	case r.slots <- struct{}{}:
		return r.dial()
	}
}

// dial opens a connection in the slot just taken, giving the slot back when it cannot.
func (r *run) dial() (*conn, error) {
	nc, err := net.Dial("tcp", r.host)
	if err != nil {
		<-r.slots
		return nil, err
	}
	r.dialed.Add(1)
	c := &conn{Conn: nc, jobs: make(chan job, 1)}
	go r.read(c)
	return c, nil
}

// read takes each answer off one connection (at most one request is outstanding on it) and
// hands the connection back; a connection that fails or is closed by the server is dropped.
func (r *run) read(c *conn) {
	in := bufio.NewReader(c)
	for j := range c.jobs {
		// A server that never answers fails the request instead of hanging the run.
		_ = c.SetReadDeadline(j.intended.Add(time.Duration(r.spec.AnswerTimeoutSec * float64(time.Second))))
		res, err := http.ReadResponse(in, nil)
		if err == nil {
			_, err = io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
		if err == nil && j.i >= r.warm {
			r.res.LatenciesMs[j.i-r.warm] = ms(time.Since(j.intended))
		}
		switch {
		case err != nil:
			r.count(j.i, &r.errors)
		case res.StatusCode < 200 || res.StatusCode > 299:
			r.count(j.i, &r.non2xx)
		}
		if err != nil || res.Close {
			c.Close()
			<-r.slots
			r.inflight.Done()
			return
		}
		r.idle <- c
		r.inflight.Done()
	}
}

// count adds one to counter when request i is measured.
func (r *run) count(i int, counter *atomic.Int64) {
	if i >= r.warm {
		counter.Add(1)
	}
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "open-loop-generator: "+format+"\n", args...)
	os.Exit(2)
}

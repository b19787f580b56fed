package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// runEtcd runs a single-member embedded etcd until SIGTERM or SIGINT.
func runEtcd(args []string) int {
	// Flag names are those of the real etcd binary (so the harness passes the same arguments to
	// this subcommand and to a KUBEBUILDER_ASSETS etcd); the singular --listen-*-url spellings
	// are accepted too. Each URL flag takes one URL.
	fs := flag.NewFlagSet("etcd", flag.ContinueOnError)
	name := fs.String("name", "default", "member name")
	dataDir := fs.String("data-dir", "", "data directory (required)")
	var clientURL, peerURL, advClientURL, advPeerURL string
	fs.StringVar(&clientURL, "listen-client-urls", "http://127.0.0.1:2379", "client URL to listen on")
	fs.StringVar(&clientURL, "listen-client-url", "http://127.0.0.1:2379", "alias of --listen-client-urls")
	fs.StringVar(&peerURL, "listen-peer-urls", "http://127.0.0.1:2380", "peer URL to listen on")
	fs.StringVar(&peerURL, "listen-peer-url", "http://127.0.0.1:2380", "alias of --listen-peer-urls")
	fs.StringVar(&advClientURL, "advertise-client-urls", "", "client URL to advertise (default: the listen URL)")
	fs.StringVar(&advPeerURL, "initial-advertise-peer-urls", "", "peer URL to advertise (default: the listen URL)")
	initialCluster := fs.String("initial-cluster", "", "initial cluster (default: this member only)")
	logLevel := fs.String("log-level", "warn", "zap log level")
	noFsync := fs.Bool("unsafe-no-fsync", true, "skip fsync (test data is disposable)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dataDir == "" {
		fmt.Fprintln(os.Stderr, "etcd: --data-dir is required")
		return 2
	}
	if advClientURL == "" {
		advClientURL = clientURL
	}
	if advPeerURL == "" {
		advPeerURL = peerURL
	}
	parse := func(flagName, raw string) (url.URL, bool) {
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" {
			fmt.Fprintf(os.Stderr, "etcd: bad --%s %q: %v\n", flagName, raw, err)
			return url.URL{}, false
		}
		return *u, true
	}
	cu, ok1 := parse("listen-client-urls", clientURL)
	pu, ok2 := parse("listen-peer-urls", peerURL)
	acu, ok3 := parse("advertise-client-urls", advClientURL)
	apu, ok4 := parse("initial-advertise-peer-urls", advPeerURL)
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return 2
	}
	exitWithParent()

	cfg := embed.NewConfig()
	cfg.Name = *name
	cfg.Dir = *dataDir
	cfg.ListenClientUrls = []url.URL{cu}
	cfg.AdvertiseClientUrls = []url.URL{acu}
	cfg.ListenPeerUrls = []url.URL{pu}
	cfg.AdvertisePeerUrls = []url.URL{apu}
	cfg.InitialCluster = *initialCluster
	if cfg.InitialCluster == "" {
		cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	}
	cfg.UnsafeNoFsync = *noFsync
	cfg.LogLevel = *logLevel
	cfg.Logger = "zap"
	cfg.LogOutputs = []string{"stderr"}

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcd: start: %v\n", err)
		return 1
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-e.Server.ReadyNotify():
		fmt.Fprintf(os.Stderr, "etcd: ready, serving clients on %s\n", acu.String())
	case <-time.After(60 * time.Second):
		e.Server.Stop()
		fmt.Fprintln(os.Stderr, "etcd: not ready after 60s")
		return 1
	case s := <-sig:
		e.Close()
		fmt.Fprintf(os.Stderr, "etcd: %v before ready, stopped\n", s)
		return 0
	}
	select {
	case s := <-sig:
		e.Close()
		fmt.Fprintf(os.Stderr, "etcd: %v, stopped\n", s)
		return 0
	case err := <-e.Err():
		e.Close()
		fmt.Fprintf(os.Stderr, "etcd: %v\n", err)
		return 1
	}
}

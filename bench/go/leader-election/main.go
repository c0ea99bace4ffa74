// Command leader-election is client-go's tools/leaderelection on a Lease, with the same flags and the same
// stdout lines as kube-cloud-rs's Rust leader-election example, so the two can be benchmarked side by side:
//
//	<unix-micros> <identity> LEADING epoch=<leaseTransitions>
//	<unix-micros> <identity> FOLLOWING leader=<id|->
//	<unix-micros> <identity> LOST
//	<unix-micros> <identity> RELEASED
//
// SIGTERM/SIGINT cancel the context: the work stops and the Lease is released (ReleaseOnCancel).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

var outMu sync.Mutex

func say(identity, what string) {
	outMu.Lock()
	defer outMu.Unlock()
	fmt.Printf("%d %s %s\n", time.Now().UnixMicro(), identity, what)
}

// epochLock wraps the Lease lock to learn leaseTransitions from the records the elector writes successfully,
// without an extra request.
type epochLock struct {
	resourcelock.Interface
	mu    sync.Mutex
	epoch int
}

func (l *epochLock) remember(ler resourcelock.LeaderElectionRecord) {
	l.mu.Lock()
	l.epoch = ler.LeaderTransitions
	l.mu.Unlock()
}

func (l *epochLock) Create(ctx context.Context, ler resourcelock.LeaderElectionRecord) error {
	err := l.Interface.Create(ctx, ler)
	if err == nil {
		l.remember(ler)
	}
	return err
}

func (l *epochLock) Update(ctx context.Context, ler resourcelock.LeaderElectionRecord) error {
	err := l.Interface.Update(ctx, ler)
	if err == nil {
		l.remember(ler)
	}
	return err
}

func (l *epochLock) Epoch() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.epoch
}

func main() {
	hostname, _ := os.Hostname()
	kubeconfig := flag.String("kubeconfig", "", "path to a kubeconfig file (default: in-cluster config)")
	id := flag.String("id", fmt.Sprintf("%s_%d", hostname, os.Getpid()), "this candidate's identity")
	namespace := flag.String("leader-elect-resource-namespace", "default", "namespace of the Lease")
	name := flag.String("leader-elect-resource-name", "leader-election-demo", "name of the Lease")
	leaseDuration := flag.Duration("leader-elect-lease-duration", 15*time.Second, "lease duration")
	renewDeadline := flag.Duration("leader-elect-renew-deadline", 10*time.Second, "renew deadline")
	retryPeriod := flag.Duration("leader-elect-retry-period", 2*time.Second, "retry period")
	flag.Bool("no-watch", false, "accepted for compatibility; client-go never watches the Lease")
	flag.Parse()

	config, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubeconfig: %v\n", err)
		os.Exit(2)
	}
	config.UserAgent = "client-go-leader-election-bench"
	// What kube-controller-manager & co. do: per-request timeout max(1s, renewDeadline/2).
	inner, err := resourcelock.NewFromKubeconfig(resourcelock.LeasesResourceLock, *namespace, *name,
		resourcelock.ResourceLockConfig{Identity: *id}, config, *renewDeadline)
	if err != nil {
		fmt.Fprintf(os.Stderr, "lock: %v\n", err)
		os.Exit(2)
	}
	lock := &epochLock{Interface: inner}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-signals
		cancel()
	}()

	me := *id
	var leading bool
	var mu sync.Mutex
	elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   *leaseDuration,
		RenewDeadline:   *renewDeadline,
		RetryPeriod:     *retryPeriod,
		ReleaseOnCancel: true,
		Name:            *name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(work context.Context) {
				mu.Lock()
				leading = true
				mu.Unlock()
				say(me, fmt.Sprintf("LEADING epoch=%d", lock.Epoch()))
				// The guarded work of this demo: act as leader until told otherwise.
				<-work.Done()
			},
			OnStoppedLeading: func() {},
			OnNewLeader: func(identity string) {
				if identity == me {
					return // reported by OnStartedLeading
				}
				if identity == "" {
					identity = "-"
				}
				say(me, "FOLLOWING leader="+identity)
			},
		},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "leader election: %v\n", err)
		os.Exit(2)
	}
	// Run returns once the context is cancelled (after the release) or leadership is lost.
	elector.Run(ctx)

	mu.Lock()
	wasLeading := leading
	mu.Unlock()
	if ctx.Err() == nil && wasLeading {
		say(me, "LOST")
		say(me, "EXIT lost")
		os.Exit(1)
	}
	say(me, "RELEASED")
}

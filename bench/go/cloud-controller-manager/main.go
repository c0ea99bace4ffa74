// The upstream cloud-controller-manager (k8s.io/cloud-provider/app) with upstream's fake cloud provider
// (k8s.io/cloud-provider/fake) registered as "fake", for `cargo run -p bench -- node-init|load-balancers|memory`.
//
// The --cloud-config file is JSON: {"requestDelayMs": 10}. The delay is upstream's fake.Cloud.RequestDelay (slept in
// every recorded call); InstanceMetadata uses the fake's OverrideInstanceMetadata hook so that every Node gets a
// providerID; EnsureLoadBalancer/UpdateLoadBalancer are replaced because the fake's versions write a map without a
// lock (a crash with --concurrent-service-syncs > 1) and keep every call's node list forever (which would
// inflate the RSS measurement). Each replacement sleeps the same delay; UpdateLoadBalancer prints
// "UPDATE_LB <namespace>/<name> hosts=<n>" on stdout when it returns.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/cloud-provider/app"
	"k8s.io/cloud-provider/app/config"
	"k8s.io/cloud-provider/fake"
	"k8s.io/cloud-provider/names"
	"k8s.io/cloud-provider/options"
	"k8s.io/component-base/cli"
	cliflag "k8s.io/component-base/cli/flag"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/klog/v2"
)

type benchConfig struct {
	RequestDelayMs int `json:"requestDelayMs"`
}

// benchCloud is upstream's fake with thread-safe, non-recording load-balancer writes.
type benchCloud struct {
	*fake.Cloud
	delay time.Duration
}

func (c *benchCloud) LoadBalancer() (cloudprovider.LoadBalancer, bool) { return c, true }

func (c *benchCloud) EnsureLoadBalancer(ctx context.Context, clusterName string, service *v1.Service, nodes []*v1.Node) (*v1.LoadBalancerStatus, error) {
	time.Sleep(c.delay)
	ports := make([]v1.PortStatus, 0, len(service.Spec.Ports))
	for _, p := range service.Spec.Ports {
		ports = append(ports, v1.PortStatus{Port: p.Port, Protocol: p.Protocol})
	}
	return &v1.LoadBalancerStatus{Ingress: []v1.LoadBalancerIngress{{IP: c.ExternalIP.String(), Ports: ports}}}, nil
}

func (c *benchCloud) UpdateLoadBalancer(ctx context.Context, clusterName string, service *v1.Service, nodes []*v1.Node) error {
	time.Sleep(c.delay)
	// The benchmark times the node-change fan-out by these lines (the Rust side by the fake's call trace).
	fmt.Printf("UPDATE_LB %s/%s hosts=%d\n", service.Namespace, service.Name, len(nodes))
	return nil
}

func newCloud(r io.Reader) (cloudprovider.Interface, error) {
	cfg := benchConfig{}
	if r != nil {
		data, err := io.ReadAll(r)
		if err != nil {
			return nil, err
		}
		if len(data) > 0 {
			if err := json.Unmarshal(data, &cfg); err != nil {
				return nil, fmt.Errorf("cloud config: %w", err)
			}
		}
	}
	delay := time.Duration(cfg.RequestDelayMs) * time.Millisecond
	f := &fake.Cloud{
		EnableInstancesV2:  true,
		ExistsByProviderID: true,
		RequestDelay:       delay,
		ExternalIP:         net.ParseIP("192.0.2.1"),
		Zone:               cloudprovider.Zone{FailureDomain: "fake-zone-1a", Region: "fake-region-1"},
		Addresses:          []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "10.0.0.1"}},
	}
	f.OverrideInstanceMetadata = func(ctx context.Context, node *v1.Node) (*cloudprovider.InstanceMetadata, error) {
		time.Sleep(delay)
		return &cloudprovider.InstanceMetadata{
			ProviderID:    "fake://" + node.Name,
			InstanceType:  "fake.small",
			NodeAddresses: []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "10.0.0.1"}},
			Zone:          f.Zone.FailureDomain,
			Region:        f.Zone.Region,
		}, nil
	}
	return &benchCloud{Cloud: f, delay: delay}, nil
}

func main() {
	cloudprovider.RegisterCloudProvider("fake", newCloud)
	ccmOptions, err := options.NewCloudControllerManagerOptions()
	if err != nil {
		klog.Fatalf("unable to initialize command options: %v", err)
	}
	fss := cliflag.NamedFlagSets{}
	command := app.NewCloudControllerManagerCommand(ccmOptions, cloudInitializer, app.DefaultInitFuncConstructors, names.CCMControllerAliases(), fss, wait.NeverStop)
	os.Exit(cli.Run(command))
}

func cloudInitializer(cfg *config.CompletedConfig) cloudprovider.Interface {
	shared := cfg.ComponentConfig.KubeCloudShared.CloudProvider
	cloud, err := cloudprovider.InitCloudProvider(shared.Name, shared.CloudConfigFile)
	if err != nil || cloud == nil {
		klog.Fatalf("cloud provider could not be initialized: %v", err)
	}
	return cloud
}

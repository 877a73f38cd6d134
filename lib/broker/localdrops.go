package broker

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kubelink/kubelink/lib/mesh"
	"github.com/kubelink/kubelink/lib/netapply"
)

// localDrops exports the packets KUBELINK-LOCAL dropped: what the mesh sent
// to the local cluster address that is neither a reply, the probe nor a
// MeshService port (GatewayPlan.LocalRules). It reads the counters when
// scraped, with a reader of its own (no state shared with the sync loop),
// and reports nothing while the chain does not exist.
type localDrops struct {
	desc *prometheus.Desc
	once sync.Once
	ch   *netapply.Chains
}

func newLocalDrops() *localDrops {
	return &localDrops{desc: prometheus.NewDesc("kubelink_cluster_address_dropped_packets",
		"Packets from the mesh to the local cluster address dropped as neither a reply, the probe nor a MeshService port (since the rule was last written).", nil, nil)}
}

func (d *localDrops) Describe(ch chan<- *prometheus.Desc) { ch <- d.desc }

func (d *localDrops) Collect(ch chan<- prometheus.Metric) {
	d.once.Do(func() { d.ch, _ = netapply.NewChains(netapply.LocalChains, false) })
	if d.ch == nil {
		return
	}
	drops, err := d.ch.Drops("mangle")
	if err != nil {
		return
	}
	if n, ok := drops[mesh.ChainLocal]; ok {
		ch <- prometheus.MustNewConstMetric(d.desc, prometheus.GaugeValue, float64(n))
	}
}

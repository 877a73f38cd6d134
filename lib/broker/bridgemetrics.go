package broker

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kubelink/kubelink/lib/bridge"
)

// bridgeCollector exports the counters of the bridge data plane, read at
// scrape time from the Connector (per link, summed over the link's
// connections) and the pump (everything, including packets no link took).
type bridgeCollector struct {
	p *bridgePlane

	rxBytes, txBytes, rxPackets, txPackets, rxFrames, txFrames *prometheus.Desc
	drops, pumpDrops, rejected, untrusted, peerCert            *prometheus.Desc
}

func newBridgeCollector(p *bridgePlane) *bridgeCollector {
	link := []string{"link"}
	return &bridgeCollector{p: p,
		rxBytes:   prometheus.NewDesc("kubelink_bridge_rx_bytes_total", "IP bytes received from the link's peer and written to the tun device.", link, nil),
		txBytes:   prometheus.NewDesc("kubelink_bridge_tx_bytes_total", "IP bytes sent to the link's peer.", link, nil),
		rxPackets: prometheus.NewDesc("kubelink_bridge_rx_packets_total", "Packets (GSO super-packets count once) received from the link's peer and delivered.", link, nil),
		txPackets: prometheus.NewDesc("kubelink_bridge_tx_packets_total", "Packets (GSO super-packets count once) sent to the link's peer.", link, nil),
		rxFrames:  prometheus.NewDesc("kubelink_bridge_rx_frames_total", "Frames of any type received from the link's peer.", link, nil),
		txFrames:  prometheus.NewDesc("kubelink_bridge_tx_frames_total", "PACKETS frames sent to the link's peer.", link, nil),
		drops: prometheus.NewDesc("kubelink_bridge_dropped_packets_total",
			"Packets from or to the link's peer that were dropped, by reason (spoofed, ingress-denied, queue-full, malformed, tun-write-failed).", []string{"link", "reason"}, nil),
		pumpDrops: prometheus.NewDesc("kubelink_bridge_device_dropped_packets_total",
			"All packets the bridge dropped, by reason, including packets read from the tun device that no connected link takes (no-route, not-connected).", []string{"reason"}, nil),
		rejected: prometheus.NewDesc("kubelink_bridge_rejected_handshakes_total",
			"Inbound bridge connections rejected during TLS or HELLO (e.g. a certificate from another CA, an unknown peer).", nil, nil),
		untrusted: prometheus.NewDesc("kubelink_bridge_untrusted_connections_total",
			"Established bridge connections closed because the peer's certificate no longer verified after the trust changed (CA rotated).", nil, nil),
		peerCert: prometheus.NewDesc("kubelink_bridge_peer_certificate_info",
			"The certificate the link's peer presented on the current connection (serial in hex).", []string{"link", "serial", "subject"}, nil),
	}
}

func (c *bridgeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.rxBytes, c.txBytes, c.rxPackets, c.txPackets, c.rxFrames, c.txFrames, c.drops, c.pumpDrops, c.rejected, c.untrusted, c.peerCert} {
		ch <- d
	}
}

func dropReasons(d bridge.Drops) map[string]uint64 {
	return map[string]uint64{
		"spoofed": d.Spoofed, "ingress-denied": d.IngressDenied, "no-route": d.NoRoute, "not-connected": d.NotConnected,
		"queue-full": d.QueueFull, "malformed": d.Malformed, "tun-write-failed": d.TUNWriteFailed,
	}
}

func (c *bridgeCollector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	rejected, untrusted := c.p.rejected.Load(), c.p.untrusted.Load()
	if conn := c.p.curConn.Load(); conn != nil {
		n, _ := conn.Rejected()
		rejected += n
		untrusted += conn.Untrusted()
		for _, id := range conn.Links() {
			s, ok := conn.LinkStats(id)
			if !ok {
				continue
			}
			counter(c.rxBytes, s.RxBytes, id)
			counter(c.txBytes, s.TxBytes, id)
			counter(c.rxPackets, s.RxPackets, id)
			counter(c.txPackets, s.TxPackets, id)
			counter(c.rxFrames, s.RxFrames, id)
			counter(c.txFrames, s.TxFrames, id)
			for reason, n := range dropReasons(s.Drops) {
				if reason != "no-route" && reason != "not-connected" { // never per peer
					counter(c.drops, n, id, reason)
				}
			}
			if cert := conn.PeerCertificate(id); cert != nil {
				ch <- prometheus.MustNewConstMetric(c.peerCert, prometheus.GaugeValue, 1, id, cert.SerialNumber.Text(16), cert.Subject.String())
			}
		}
	}
	counter(c.rejected, rejected)
	counter(c.untrusted, untrusted)
	if pump := c.p.curPump.Load(); pump != nil {
		for reason, n := range dropReasons(pump.Drops()) {
			counter(c.pumpDrops, n, reason)
		}
	}
}

package mcs

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
)

// conflict is what the exports of one name across the clusters disagree
// on, as KEP-1645's Conflict condition reports it on every exporting
// cluster: the oldest export wins (its type, session affinity and port
// definitions), and the reason names the first property found to differ.
type conflict struct {
	reason  mcsv1beta1.ServiceExportConditionReason
	message string
}

// sortOldestFirst orders the exports of one name as the KEP resolves a
// conflict: by the ServiceExport's creation, ties by cluster name.
func sortOldestFirst(srcs []source) {
	slices.SortFunc(srcs, func(a, b source) int {
		return cmp.Or(a.e.Exported.Compare(b.e.Exported), strings.Compare(a.cluster, b.cluster))
	})
}

// findConflict compares every export of one name (sorted oldest first)
// with the oldest; nil: they agree. Ports conflict when one name stands
// for different protocols or numbers, or one protocol and number has
// different names or application protocols; ports only one cluster
// exports are no conflict (the import offers the union).
func findConflict(srcs []source) *conflict {
	if len(srcs) < 2 {
		return nil
	}
	oldest := srcs[0]
	winner := fmt.Sprintf("the oldest export (cluster %s, exported %s) wins", oldest.cluster, oldest.e.Exported.Format("2006-01-02T15:04:05Z"))
	for _, s := range srcs[1:] {
		if s.e.Type != oldest.e.Type {
			return &conflict{mcsv1beta1.ServiceExportReasonTypeConflict, fmt.Sprintf(
				"cluster %s exports %s as %s, cluster %s as %s: %s, and cluster %s is left out of the import",
				s.cluster, s.e.Key(), s.e.Type, oldest.cluster, oldest.e.Type, winner, s.cluster)}
		}
	}
	// every port definition of every cluster, by name and by number
	type def struct {
		cluster string
		p       Port
	}
	byName, byNumber := map[string]def{}, map[string]def{}
	for _, s := range srcs {
		for _, p := range s.e.Ports {
			num := fmt.Sprintf("%s/%d", p.Protocol, p.Port)
			if d, ok := byNumber[num]; ok && (d.p.Name != p.Name || d.p.AppProtocol != p.AppProtocol) {
				return &conflict{mcsv1beta1.ServiceExportReasonPortConflict, fmt.Sprintf(
					"port %s of %s is %s in cluster %s and %s in cluster %s: %s",
					num, s.e.Key(), describePort(d.p), d.cluster, describePort(p), s.cluster, winner)}
			}
			if d, ok := byName[p.Name]; ok && p.Name != "" && (d.p.Protocol != p.Protocol || d.p.Port != p.Port) {
				return &conflict{mcsv1beta1.ServiceExportReasonPortConflict, fmt.Sprintf(
					"port %q of %s is %s/%d in cluster %s and %s/%d in cluster %s: %s",
					p.Name, s.e.Key(), d.p.Protocol, d.p.Port, d.cluster, p.Protocol, p.Port, s.cluster, winner)}
			}
			if _, ok := byNumber[num]; !ok {
				byNumber[num] = def{s.cluster, p}
			}
			if _, ok := byName[p.Name]; !ok {
				byName[p.Name] = def{s.cluster, p}
			}
		}
	}
	for _, s := range srcs[1:] {
		if affinity(s.e) != affinity(oldest.e) {
			return &conflict{mcsv1beta1.ServiceExportReasonSessionAffinityConflict, fmt.Sprintf(
				"cluster %s exports %s with session affinity %s, cluster %s with %s: %s",
				s.cluster, s.e.Key(), affinity(s.e), oldest.cluster, affinity(oldest.e), winner)}
		}
		if s.e.SessionAffinityTimeout != oldest.e.SessionAffinityTimeout {
			return &conflict{mcsv1beta1.ServiceExportReasonSessionAffinityConfigConflict, fmt.Sprintf(
				"cluster %s exports %s with a session affinity timeout of %d s, cluster %s with %d s: %s",
				s.cluster, s.e.Key(), s.e.SessionAffinityTimeout, oldest.cluster, oldest.e.SessionAffinityTimeout, winner)}
		}
	}
	return nil
}

// affinity is an export's session affinity; a record may leave out None.
func affinity(e Export) corev1.ServiceAffinity {
	return cmp.Or(e.SessionAffinity, corev1.ServiceAffinityNone)
}

func describePort(p Port) string {
	s := fmt.Sprintf("named %q", p.Name)
	if p.AppProtocol != "" {
		s += " (appProtocol " + p.AppProtocol + ")"
	}
	return s
}

// conflictsOf finds the conflict of each of this cluster's exports with
// the peers' exports of the same name, by key. self names this cluster in
// the messages ("" before the broker has named it).
func conflictsOf(self string, own Record, im Imports) map[string]*conflict {
	if self == "" {
		self = "(this cluster)"
	}
	by := map[string][]source{}
	for _, e := range own.Exports {
		by[e.Key()] = append(by[e.Key()], source{cluster: self, e: e, local: true})
	}
	for _, c := range im.Clusters {
		for _, e := range c.Exports {
			if _, ok := by[e.Key()]; ok && c.Cluster != self {
				by[e.Key()] = append(by[e.Key()], source{cluster: c.Cluster, e: e})
			}
		}
	}
	out := map[string]*conflict{}
	for k, srcs := range by {
		sortOldestFirst(srcs)
		if c := findConflict(srcs); c != nil {
			out[k] = c
		}
	}
	return out
}

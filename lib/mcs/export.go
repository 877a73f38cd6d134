// Package mcs is kubelink's side of the Multi-Cluster Services API
// (KEP-1645, multicluster.x-k8s.io, module sigs.k8s.io/mcs-api): which of
// this cluster's Services are exported (a ServiceExport of the same name and
// namespace), the truth about each export in its status conditions, and the
// record of the exports that the clusters of the mesh exchange
// (docs/mcs.md).
package mcs

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
)

// Export is one exported Service as the clusters of the mesh exchange it:
// what an importing cluster needs to build its ServiceImport (type, ports,
// session affinity) and to reach the Service through the mesh (its
// ClusterIP, inside the exporting cluster's service CIDR), and when the
// export was made (KEP-1645: in a conflict the oldest export wins).
type Export struct {
	Namespace       string                       `json:"namespace"`
	Name            string                       `json:"name"`
	Type            mcsv1beta1.ServiceImportType `json:"type"`
	ClusterIP       string                       `json:"clusterIP,omitempty"` // ClusterSetIP type only
	Ports           []Port                       `json:"ports"`
	SessionAffinity corev1.ServiceAffinity       `json:"sessionAffinity,omitempty"`
	// SessionAffinityTimeout is the ClientIP affinity's timeout in
	// seconds, 0 when not set.
	SessionAffinityTimeout int32     `json:"sessionAffinityTimeout,omitempty"`
	Exported               time.Time `json:"exported"` // the ServiceExport's creation
}

// Port is an exported port: what a ServiceImport's ports list.
type Port struct {
	Name        string          `json:"name,omitempty"`
	Protocol    corev1.Protocol `json:"protocol"`
	AppProtocol string          `json:"appProtocol,omitempty"`
	Port        int32           `json:"port"`
}

// Key is namespace/name.
func (e Export) Key() string { return e.Namespace + "/" + e.Name }

// Validate checks a ServiceExport against its Service (nil: none of that
// name) and returns the export, or the reason (a Valid condition reason of
// KEP-1645, or Pending for a Service without its ClusterIP yet) and a
// message that says what to do. The KEP allows every type
// but ExternalName; a headless Service is exported as type Headless.
func Validate(se *mcsv1beta1.ServiceExport, svc *corev1.Service) (Export, mcsv1beta1.ServiceExportConditionReason, string) {
	ref := se.Namespace + "/" + se.Name
	if svc == nil || svc.DeletionTimestamp != nil {
		return Export{}, mcsv1beta1.ServiceExportReasonNoService,
			fmt.Sprintf("no Service %s: a ServiceExport exports the Service of the same name and namespace; create it, or delete the ServiceExport", ref)
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return Export{}, mcsv1beta1.ServiceExportReasonInvalidServiceType,
			fmt.Sprintf("Service %s is of type ExternalName, which cannot be exported (KEP-1645): export a Service with endpoints", ref)
	}
	e := Export{Namespace: svc.Namespace, Name: svc.Name, Exported: se.CreationTimestamp.Time.UTC(),
		SessionAffinity: svc.Spec.SessionAffinity}
	if e.SessionAffinity == "" {
		e.SessionAffinity = corev1.ServiceAffinityNone
	}
	if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
		e.SessionAffinityTimeout = *c.ClientIP.TimeoutSeconds
	}
	if svc.Spec.ClusterIP == corev1.ClusterIPNone {
		e.Type = mcsv1beta1.Headless
	} else {
		if svc.Spec.ClusterIP == "" {
			return Export{}, mcsv1beta1.ServiceExportReasonPending,
				fmt.Sprintf("Service %s has no ClusterIP yet; it is exported once it has one", ref)
		}
		e.Type, e.ClusterIP = mcsv1beta1.ClusterSetIP, svc.Spec.ClusterIP
	}
	for _, p := range svc.Spec.Ports {
		port := Port{Name: p.Name, Protocol: p.Protocol, Port: p.Port}
		if port.Protocol == "" {
			port.Protocol = corev1.ProtocolTCP
		}
		if p.AppProtocol != nil {
			port.AppProtocol = *p.AppProtocol
		}
		e.Ports = append(e.Ports, port)
	}
	slices.SortFunc(e.Ports, func(a, b Port) int {
		if c := strings.Compare(string(a.Protocol), string(b.Protocol)); c != 0 {
			return c
		}
		return int(a.Port) - int(b.Port)
	})
	return e, mcsv1beta1.ServiceExportReasonValid, fmt.Sprintf("Service %s is exported as %s", ref, e.Type)
}

// Record is the list of a cluster's valid exports, sorted by key: what it
// serves to the other clusters of the mesh.
type Record struct {
	Exports []Export `json:"exports"`
	// Imported acknowledges the other clusters' exports this cluster
	// imported as ClusterSetIP, as "<cluster>/<namespace>/<name>": an
	// exporting cluster reads its own from here and sets its
	// ServiceExport's Ready True.
	Imported []string `json:"imported,omitempty"`
}

// Encode is the record's canonical JSON (sorted, so equal records are equal
// bytes).
func (r Record) Encode() ([]byte, error) {
	slices.SortFunc(r.Exports, func(a, b Export) int { return strings.Compare(a.Key(), b.Key()) })
	r.Imported = slices.Compact(slices.Sorted(slices.Values(r.Imported)))
	if r.Exports == nil {
		r.Exports = []Export{}
	}
	return json.Marshal(r)
}

// DecodeRecord reads a record another cluster served.
func DecodeRecord(b []byte) (Record, error) {
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return Record{}, fmt.Errorf("an export record that does not parse: %w", err)
	}
	return r, nil
}

// setCondition sets a condition of a ServiceExport's status, keeping its
// transition time when the status did not change; it reports whether
// anything changed.
func setCondition(conds *[]metav1.Condition, c metav1.Condition, now time.Time) bool {
	for i, old := range *conds {
		if old.Type != c.Type {
			continue
		}
		if old.Status == c.Status && old.Reason == c.Reason && old.Message == c.Message && old.ObservedGeneration == c.ObservedGeneration {
			return false
		}
		c.LastTransitionTime = old.LastTransitionTime
		if old.Status != c.Status {
			c.LastTransitionTime = metav1.NewTime(now)
		}
		(*conds)[i] = c
		return true
	}
	c.LastTransitionTime = metav1.NewTime(now)
	*conds = append(*conds, c)
	return true
}

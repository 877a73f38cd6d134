package meshdns

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// managedBy labels the objects the controller creates.
var managedBy = map[string]string{"app.kubernetes.io/managed-by": "kubelink-meshdns"}

// contentHash identifies a Secret content; it goes on the pod template of
// the kubelink CoreDNS deployment.
func contentHash(out Output) string {
	h := sha256.New()
	h.Write([]byte(out.Corefile))
	h.Write([]byte{0})
	h.Write(out.Kubeconfig)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// applySecret writes Corefile and kubeconfig into the Secret the kubelink
// CoreDNS mounts, creating it if needed. Other keys are left alone.
func (c *Controller) applySecret(ctx context.Context, out Output) (changed bool, err error) {
	key := client.ObjectKey{Namespace: c.cfg.Namespace, Name: c.cfg.Secret}
	want := map[string][]byte{SecretKeyCorefile: []byte(out.Corefile), SecretKeyKubeconfig: out.Kubeconfig}
	var s corev1.Secret
	err = c.api.Get(ctx, key, &s)
	if apierrors.IsNotFound(err) {
		s = corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name, Labels: managedBy},
			Type: corev1.SecretTypeOpaque, Data: want}
		if err := c.api.Create(ctx, &s); err != nil {
			return false, fmt.Errorf("creating Secret %s: %w", key, err)
		}
		c.metrics.writes.WithLabelValues("secret").Inc()
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading Secret %s: %w", key, err)
	}
	if string(s.Data[SecretKeyCorefile]) == out.Corefile && string(s.Data[SecretKeyKubeconfig]) == string(out.Kubeconfig) {
		return false, nil
	}
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	for k, v := range want {
		s.Data[k] = v
	}
	// Update carries the resourceVersion: a concurrent writer makes it fail
	// and the next sync starts from the new state.
	if err := c.api.Update(ctx, &s); err != nil {
		return false, fmt.Errorf("updating Secret %s: %w", key, err)
	}
	c.metrics.writes.WithLabelValues("secret").Inc()
	return true, nil
}

// restartKubelinkDNS restarts the kubelink CoreDNS deployment when its pods
// were started with another Secret content than hash. A missing deployment
// is not an error: its pods read the Secret when they start.
func (c *Controller) restartKubelinkDNS(ctx context.Context, hash string) error {
	key := client.ObjectKey{Namespace: c.cfg.Namespace, Name: c.cfg.Deployment}
	var d appsv1.Deployment
	if err := c.api.Get(ctx, key, &d); err != nil {
		if apierrors.IsNotFound(err) {
			c.log.Debug("kubelink CoreDNS deployment not found; nothing to restart", "deployment", key.String())
			return nil
		}
		return fmt.Errorf("reading Deployment %s: %w", key, err)
	}
	if d.Spec.Template.Annotations[ConfigHashAnnotation] == hash {
		return nil
	}
	return c.restart(ctx, key, map[string]string{ConfigHashAnnotation: hash})
}

// restart sets the restart annotation (and extra) on a deployment's pod
// template, which rolls its pods.
func (c *Controller) restart(ctx context.Context, key client.ObjectKey, extra map[string]string) error {
	ann := map[string]string{RestartAnnotation: time.Now().UTC().Format(time.RFC3339Nano)}
	for k, v := range extra {
		ann[k] = v
	}
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"template": map[string]any{"metadata": map[string]any{"annotations": ann}}}})
	if err != nil {
		return err
	}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
	if err := c.api.Patch(ctx, d, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return fmt.Errorf("restarting Deployment %s: %w", key, err)
	}
	c.metrics.restarts.WithLabelValues(key.String()).Inc()
	c.log.Info("restarted deployment", "deployment", key.String())
	return nil
}

// applyHook writes our key of the cluster DNS's coredns-custom ConfigMap
// and restarts the cluster DNS when it changed. Only with
// --coredns-configure (the original wrote it regardless).
func (c *Controller) applyHook(ctx context.Context, meshes []MeshInput) error {
	content, err := CorednsCustom(meshes, c.cfg.ClusterSetZone, c.cfg.KubelinkDNSIP, c.cfg.ClusterDNSPort)
	if err != nil {
		return fmt.Errorf("coredns-custom: %w", err)
	}
	key := client.ObjectKey{Namespace: HookNamespace, Name: HookConfigMap}
	var cm corev1.ConfigMap
	err = c.api.Get(ctx, key, &cm)
	switch {
	case apierrors.IsNotFound(err):
		cm = corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name, Labels: managedBy},
			Data: map[string]string{HookKey: content}}
		err = c.api.Create(ctx, &cm)
	case err != nil:
		return fmt.Errorf("reading ConfigMap %s: %w", key, err)
	case cm.Data[HookKey] == content:
		return nil
	default:
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data[HookKey] = content
		err = c.api.Update(ctx, &cm)
	}
	if err != nil {
		return fmt.Errorf("writing ConfigMap %s: %w", key, err)
	}
	c.metrics.writes.WithLabelValues("hook").Inc()
	c.log.Info("cluster DNS hook changed", "configmap", key.String(), "key", HookKey)
	// Restart only on change: the cluster DNS belongs to someone else, and a
	// missed restart is healed by its reload plugin.
	dkey := client.ObjectKey{Namespace: HookNamespace, Name: ClusterDNSDeployment}
	if err := c.restart(ctx, dkey, nil); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

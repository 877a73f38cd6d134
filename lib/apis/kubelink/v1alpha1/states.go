package v1alpha1

// Link states. The meanings are the ones the original README gives (the old
// code swapped Invalid and Stale; we do not).
const (
	// StateInvalid: the link's own attributes are wrong (bad CIDR, bad key, ...).
	StateInvalid = "Invalid"
	// StateStale: the attributes parse, but the mesh setup is wrong for this
	// link (no LocalLink for its mesh, address outside the mesh, ...).
	StateStale = "Stale"
	// StateError: a hard local error (device, key, DNS lookup of the endpoint).
	StateError = "Error"
	// StateIdle: valid, but no tunnel connection right now (bridge mode).
	StateIdle = "Idle"
	// StateUp: connected and the health probe answers.
	StateUp = "Up"
	// StateDown: the peer does not answer (no handshake or probe reply).
	StateDown = "Down"
	// StateDeleting: the object is being deleted.
	StateDeleting = "Deleting"
)

// MeshService states.
const (
	StateOk          = "Ok"
	StateUnsupported = "Unsupported"
)

// Special endpoint values of a KubeLink.
const (
	// EndpointLocalLink marks the KubeLink that defines the local member of a mesh.
	EndpointLocalLink = "LocalLink"
	// EndpointInbound marks a peer without a dialable endpoint: it connects to us.
	EndpointInbound = "Inbound"
)

// Condition types used in KubeLink and MeshService status.
const (
	// ConditionValid is True when the spec and the mesh setup are valid.
	ConditionValid = "Valid"
	// ConditionConnected is True when the tunnel to the peer is up and the
	// health probe answers.
	ConditionConnected = "Connected"
	// ConditionReady sums up the object: True when it does what it says.
	ConditionReady = "Ready"
)

// Secret keys.
const (
	// SecretKeyWireguardPrivateKey is the key the original code and examples use.
	SecretKeyWireguardPrivateKey = "WireguardPrivateKey"
	// SecretKeyWireGuardPrivateKey is the spelling of the original README; accepted too.
	SecretKeyWireGuardPrivateKey = "WireGuardPrivateKey"
	// SecretKeyWireguardPublicKey is informational only.
	SecretKeyWireguardPublicKey = "WireguardPublicKey"
	// SecretKeyToken and SecretKeyCAData are the keys of an apiAccess secret.
	SecretKeyToken  = "token"
	SecretKeyCAData = "certificate-authority-data"
)

// Annotations of the auto-connect proposal flow (bridge mode).
const (
	// AnnotationAutoConnected marks a KubeLink that --auto-connect proposed
	// for a peer; its value is the peer certificate's identities. Such a
	// link takes part in nothing (Stale, not routed, not in the data plane)
	// until AnnotationApproved is "true".
	AnnotationAutoConnected = "kubelink.mandelsoft.org/auto-connected"
	// AnnotationApproved set to "true" by an admin (or kubelinkctl) approves
	// an auto-connected link.
	AnnotationApproved = "kubelink.mandelsoft.org/approved"
	// AnnotationAutoConnectDeny on a LocalLink lists peer identities
	// (kubelink://<mesh>/<cluster>, comma separated) for which --auto-connect
	// proposes no link, e.g. after an admin deleted one.
	AnnotationAutoConnectDeny = "kubelink.mandelsoft.org/auto-connect-deny"
)

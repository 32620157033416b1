// Package registration builds podarmor's MutatingWebhookConfiguration and
// ValidatingWebhookConfiguration: which requests reach the webhook, and what the API
// server does when it cannot. The Helm chart, the local cluster and the end-to-end tests
// all register the webhook from here, so they cannot drift apart.
package registration

import (
	"errors"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/webhook/admission"
	"github.com/podarmor/podarmor/webhook/server"
)

// SystemNamespaces are never selected, even when labelled: podarmor must not be able to
// stop the cluster's own pods from starting.
var SystemNamespaces = []string{"kube-system", "kube-public", "kube-node-lease"}

// Options say where the webhook is and how it is trusted.
type Options struct {
	// Name of both configurations; defaults to "podarmor".
	Name string
	// Service is the webhook's Service (the usual in-cluster setup) ...
	Service *admissionregistrationv1.ServiceReference
	// ... or URL its base URL (a webhook outside the cluster, e.g. on loopback in tests).
	URL string
	// CABundle is the PEM of the CA that signed the serving certificate; the webhook
	// keeps it current itself when it manages its certificates.
	CABundle []byte
	// OwnNamespace is where podarmor runs; it is excluded like the system namespaces.
	OwnNamespace string
	// TimeoutSeconds defaults to 5.
	TimeoutSeconds int32
}

func (o *Options) defaults() error {
	if o.Name == "" {
		o.Name = "podarmor"
	}
	if (o.Service == nil) == (o.URL == "") {
		return errors.New("registration: set exactly one of Service and URL")
	}
	if o.TimeoutSeconds == 0 {
		o.TimeoutSeconds = 5
	}
	return nil
}

func (o *Options) client(path string) admissionregistrationv1.WebhookClientConfig {
	c := admissionregistrationv1.WebhookClientConfig{CABundle: o.CABundle}
	if o.Service != nil {
		svc := *o.Service
		svc.Path = &path
		c.Service = &svc
	} else {
		url := o.URL + path
		c.URL = &url
	}
	return c
}

// namespaces selects opted-in namespaces other than the system ones and podarmor's own.
func (o *Options) namespaces() *metav1.LabelSelector {
	excluded := append([]string{}, SystemNamespaces...)
	if o.OwnNamespace != "" {
		excluded = append(excluded, o.OwnNamespace)
	}
	return &metav1.LabelSelector{
		MatchLabels: map[string]string{v1alpha1.LabelEnable: "true"},
		MatchExpressions: []metav1.LabelSelectorRequirement{{
			Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: excluded,
		}},
	}
}

// podRules are pod creation and the ephemeralcontainers subresource (kubectl debug).
func podRules() []admissionregistrationv1.RuleWithOperations {
	scope := admissionregistrationv1.NamespacedScope
	return []admissionregistrationv1.RuleWithOperations{
		{
			Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
			Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}, Scope: &scope},
		},
		{
			Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Update},
			Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods/ephemeralcontainers"}, Scope: &scope},
		},
	}
}

// NotSealedCondition names the matchCondition of the validating pod webhook.
const NotSealedCondition = "not-sealed-by-podarmor"

// SealExpression is admission.Seal in CEL, over the pod the API server is about to
// store: a list of entries, each a list of fields. The pod's entry comes first, then one
// per init, regular and ephemeral container.
var SealExpression = `[[
    string(object.metadata.?labels[?'` + v1alpha1.LabelProfile + `'].orValue('')),
    string(object.spec.?securityContext.?seccompProfile.?type.orValue('')),
    string(object.spec.?securityContext.?seccompProfile.?localhostProfile.orValue('')),
    string(object.spec.?securityContext.?appArmorProfile.?type.orValue('')),
    string(object.spec.?securityContext.?appArmorProfile.?localhostProfile.orValue(''))
  ]] +
  object.spec.?initContainers.orValue([]).map(c, ` + sealContainer("i") + `) +
  object.spec.containers.map(c, ` + sealContainer("c") + `) +
  object.spec.?ephemeralContainers.orValue([]).map(c, ` + sealContainer("e") + `)`

// sealContainer is the entry of container c; CEL sees the pod untyped, and list
// literals must be of one type, hence the string() around each field.
func sealContainer(kind string) string {
	return `['` + kind + `', string(c.name),
    string(c.?securityContext.?seccompProfile.?type.orValue('')),
    string(c.?securityContext.?seccompProfile.?localhostProfile.orValue('')),
    string(c.?securityContext.?appArmorProfile.?type.orValue('')),
    string(c.?securityContext.?appArmorProfile.?localhostProfile.orValue('')),
    c.?securityContext.?appArmorProfile.hasValue() ? '' :
      string(object.metadata.?annotations[?('` + admission.AppArmorAnnotationPrefix + `' + c.name)].orValue(''))]`
}

// NotSealedExpression is true unless the pod carries a seal (admission.AnnotationSeal)
// that agrees with its confinement: only then is the validating pod webhook skipped. A
// debug container always gets the full check: annotations of a running pod can change
// without podarmor seeing it, so its seal is only trusted at creation, where the mutating
// webhook has just written it.
var NotSealedExpression = `(has(request.subResource) && request.subResource == 'ephemeralcontainers') ||
  object.metadata.?annotations[?'` + admission.AnnotationSeal + `'].orValue('').split(';').map(e, e.split('|')) !=
  ` + SealExpression

// Configurations returns both webhook configurations. Failure policy is Fail: when the
// webhook cannot answer, pods in opted-in namespaces are refused rather than admitted
// unprotected; everything else never reaches it.
func Configurations(o Options) (*admissionregistrationv1.MutatingWebhookConfiguration, *admissionregistrationv1.ValidatingWebhookConfiguration, error) {
	if err := o.defaults(); err != nil {
		return nil, nil, err
	}
	fail := admissionregistrationv1.Fail
	none := admissionregistrationv1.SideEffectClassNone
	equivalent := admissionregistrationv1.Equivalent
	ifNeeded := admissionregistrationv1.IfNeededReinvocationPolicy
	timeout := o.TimeoutSeconds
	meta := metav1.ObjectMeta{Name: o.Name, Labels: map[string]string{"app.kubernetes.io/name": "podarmor"}}

	mutating := &admissionregistrationv1.MutatingWebhookConfiguration{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "MutatingWebhookConfiguration"},
		ObjectMeta: meta,
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "pods.podarmor.io",
			ClientConfig:            o.client(server.PathMutatePods),
			Rules:                   podRules(),
			NamespaceSelector:       o.namespaces(),
			FailurePolicy:           &fail,
			MatchPolicy:             &equivalent,
			SideEffects:             &none,
			TimeoutSeconds:          &timeout,
			AdmissionReviewVersions: []string{"v1"},
			ReinvocationPolicy:      &ifNeeded,
		}},
	}
	policyScope := admissionregistrationv1.AllScopes
	validating := &admissionregistrationv1.ValidatingWebhookConfiguration{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "ValidatingWebhookConfiguration"},
		ObjectMeta: *meta.DeepCopy(),
		Webhooks: []admissionregistrationv1.ValidatingWebhook{
			{
				// Runs after every mutating webhook: refuses a pod that does not carry what
				// its policy asks for, whatever happened to it on the way. The API server
				// calls it only when the pod's confinement is not exactly as the mutating
				// webhook sealed it; docs/webhook.md says why that keeps every guarantee.
				Name:              "pods.podarmor.io",
				ClientConfig:      o.client(server.PathValidatePods),
				Rules:             podRules(),
				NamespaceSelector: o.namespaces(),
				MatchConditions: []admissionregistrationv1.MatchCondition{{
					Name: NotSealedCondition, Expression: NotSealedExpression,
				}},
				FailurePolicy:           &fail,
				MatchPolicy:             &equivalent,
				SideEffects:             &none,
				TimeoutSeconds:          &timeout,
				AdmissionReviewVersions: []string{"v1"},
			},
			{
				Name:         "policies.podarmor.io",
				ClientConfig: o.client(server.PathValidatePolicies),
				Rules: []admissionregistrationv1.RuleWithOperations{{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
					Rule: admissionregistrationv1.Rule{
						APIGroups: []string{v1alpha1.GroupName}, APIVersions: []string{v1alpha1.SchemeGroupVersion.Version},
						Resources: []string{"armorpolicies", "clusterarmorpolicies"}, Scope: &policyScope,
					},
				}},
				FailurePolicy:           &fail,
				MatchPolicy:             &equivalent,
				SideEffects:             &none,
				TimeoutSeconds:          &timeout,
				AdmissionReviewVersions: []string{"v1"},
			},
		},
	}
	return mutating, validating, nil
}

// Package framework runs podarmor's end-to-end tests against a real Kubernetes control
// plane: an etcd and a kube-apiserver of a chosen Kubernetes release, started as child
// processes of the test on loopback, with podarmor's CRDs installed.
//
// A test starts its own control plane and talks to it as the cluster admin:
//
//	func TestSomething(t *testing.T) {
//		for _, version := range framework.Versions(t) {
//			t.Run(version, func(t *testing.T) {
//				t.Parallel()
//				cp := framework.StartControlPlane(t, framework.Options{Version: version})
//				ns := cp.CreateNamespace(t, nil)
//				... cp.Client.Create(t.Context(), obj) ...
//			})
//		}
//	}
//
// and the package's TestMain hands over to [Main], which builds the binaries of every
// version before any test runs (outside go test's -timeout, since the first build takes
// minutes). e2e/skeleton_test.go is the example to copy.
//
// # Where the binaries come from
//
// hack/kube-binaries.sh builds kube-apiserver, kubectl and etcd from the Go module proxy
// (release downloads are not reachable here) into ~/.cache/podarmor/kube/VERSION/bin, once
// per version. The versions come from PODARMOR_KUBE_VERSIONS, see [Versions].
//
// # What the control plane looks like
//
// The kube-apiserver flags are the ones kubeadm gives a real cluster, minus what needs a
// node: authorization Node,RBAC; the default admission plugins plus NodeRestriction (the
// default set includes MutatingAdmissionWebhook and ValidatingAdmissionWebhook, so
// podarmor's webhook is called as in production); a service-account issuer and an RSA key
// pair made in Go; a CA made in Go that signs the serving certificate and is trusted for
// client certificates. The test authenticates as an admin user (group system:masters)
// through a token file. All of it is written out in [NewSetup]; read that function to
// know exactly what the server runs with, and pass Options.APIServerFlags to change it.
//
// There is no kube-controller-manager, scheduler or kubelet: objects are stored and go
// through admission, but nothing acts on them (pods stay Pending, and no controller makes
// a namespace's default ServiceAccount, so [ControlPlane.CreateNamespace] makes it).
//
// # Why not envtest
//
// controller-runtime's envtest can run the same binaries (its BinaryAssetsDirectory), but
// it merges its own flags into the server's (it switches the ServiceAccount admission
// plugin off and authenticates with client certificates), so what an admission webhook
// sees there differs from a real cluster in ways a reader cannot tell from our code. Here
// every flag is in one function, and hack/local-cluster.sh starts the very same command
// lines (through e2e/cmd/controlplane-config).
package framework

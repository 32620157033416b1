package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupName is the API group of every podarmor resource.
const GroupName = "podarmor.io"

// SchemeGroupVersion is the group and version of the types in this package.
var SchemeGroupVersion = schema.GroupVersion{Group: GroupName, Version: "v1alpha1"}

// AddToScheme registers the types of this package with a scheme.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(SchemeGroupVersion,
		&ArmorPolicy{}, &ArmorPolicyList{},
		&ClusterArmorPolicy{}, &ClusterArmorPolicyList{},
		&ArmorNodeStatus{}, &ArmorNodeStatusList{},
	)
	metav1.AddToGroupVersion(s, SchemeGroupVersion)
	return nil
}

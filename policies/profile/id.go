// Package profile derives the profile id of a policy: the value of the pod label
// podarmor.io/profile, from which the AppArmor profile name and the seccomp file name are
// made. The id depends only on the policy's kind, namespace and name, so it is stable
// across spec changes, and it is a valid label value (at most 63 characters).
package profile

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// MaxLen is the longest id: the limit of a Kubernetes label value.
const MaxLen = 63

// hashLen is how many hex digits of the identity's hash a shortened id keeps.
const hashLen = 10

// ForArmorPolicy is the id of the ArmorPolicy namespace/name: "ap.<namespace>.<name>".
// Namespaces are DNS labels without dots, so the first dot after the prefix separates
// namespace from name and no two policies share an id.
func ForArmorPolicy(namespace, name string) string {
	return shorten("ap." + namespace + "." + name)
}

// ForClusterArmorPolicy is the id of the ClusterArmorPolicy name: "cap.<name>".
func ForClusterArmorPolicy(name string) string {
	return shorten("cap." + name)
}

// shorten keeps id as is when it fits; otherwise it keeps a prefix and appends a hash of
// the whole id, so long names stay readable and distinct.
func shorten(id string) string {
	if len(id) <= MaxLen {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	head := strings.TrimRight(id[:MaxLen-hashLen-1], ".-")
	return head + "-" + hex.EncodeToString(sum[:])[:hashLen]
}

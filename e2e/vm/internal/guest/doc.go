// Package guest holds the Go tests that e2e/vm's own tests run inside the VM, to prove
// that a guest test sees the machine the VM promises. They are in files with the vmguest
// build tag, so the host's `go test ./...` finds no tests here and compiles none of them;
// e2e/vm.RunGoTest builds them with the tag. Copy guest_test.go to start a package of
// guest tests of your own.
package guest

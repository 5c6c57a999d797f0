// Package archtest checks that the tree keeps DESIGN.md's dependency rules
// ("Layout and dependency direction"): who may import whom among ferry's own
// packages, and that test-support packages stay out of production builds.
//
// Test support only: it has no code outside its _test.go files. The check runs
// `go list -json` over the module (a second or two, no network) and prints each
// broken rule with the import that broke it. The rules are a table in
// rules_test.go; a new package under internal/ must be added to it, as
// production or test support, before the test passes.
package archtest

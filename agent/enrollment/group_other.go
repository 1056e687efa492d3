//go:build !unix

package enrollment

// dirGroup reports no group where files have none.
func dirGroup(string) (int, bool) { return 0, false }

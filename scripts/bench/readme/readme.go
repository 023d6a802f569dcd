// Package readme rewrites a benchmark's section of README.md: the text
// between `<!-- bench:NAME:begin -->` and `<!-- bench:NAME:end -->`, so
// each benchmark owns its block of figures and nothing else.
package readme

import (
	"fmt"
	"os"
	"strings"
)

// Markers returns the begin and end markers of the section name.
func Markers(name string) (begin, end string) {
	return "<!-- bench:" + name + ":begin -->", "<!-- bench:" + name + ":end -->"
}

// Replace puts text between the markers of section name in the file at
// path. A file without both markers, in order, is left unchanged and is
// an error.
func Replace(path, name, text string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	begin, end := Markers(name)
	s := string(b)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		return fmt.Errorf("%s has no %s … %s section; left unchanged", path, begin, end)
	}
	return os.WriteFile(path, []byte(s[:i+len(begin)]+text+s[j:]), 0o644)
}

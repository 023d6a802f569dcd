// Package readme rewrites a benchmark's section of README.md: the lines
// between `<!-- bench:NAME:begin -->` and `<!-- bench:NAME:end -->`, so
// each benchmark owns its block of figures and nothing else.
package readme

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ErrNoMarkers reports a file without the section's markers, in order.
var ErrNoMarkers = errors.New("no benchmark section markers")

// Markers returns the begin and end markers of the section name.
func Markers(name string) (begin, end string) {
	return "<!-- bench:" + name + ":begin -->", "<!-- bench:" + name + ":end -->"
}

// Replace puts text, between blank lines, between the marker lines of
// section name in the file at path, keeping the markers. The file is
// replaced atomically with its permissions kept. A file without both
// markers, in order, is left alone and ErrNoMarkers returned.
func Replace(path, name, text string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	beginMarker, endMarker := Markers(name)
	lines := strings.SplitAfter(string(b), "\n")
	begin, end := -1, -1
	for i, l := range lines {
		switch strings.TrimSpace(l) {
		case beginMarker:
			if begin < 0 {
				begin = i
			}
		case endMarker:
			if begin >= 0 && end < 0 {
				end = i
			}
		}
	}
	if begin < 0 || end < 0 {
		return fmt.Errorf("%s: %w %s … %s", path, ErrNoMarkers, beginMarker, endMarker)
	}
	var out strings.Builder
	for _, l := range lines[:begin+1] {
		out.WriteString(l)
	}
	out.WriteString("\n" + strings.TrimSpace(text) + "\n\n")
	for _, l := range lines[end:] {
		out.WriteString(l)
	}
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".bench-readme-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(out.String()); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(st.Mode().Perm()); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

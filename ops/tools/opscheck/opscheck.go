// Package opscheck checks Meridian's deployment artefacts (ops/) against
// the code they deploy: the metric names dashboards and alert rules
// query, the binaries and flags systemd units and Dockerfiles start, and
// what the Helm chart renders. Its tests are the checks; `make ops-check`
// runs them after promtool and helm. It lives in the ops/tools module so
// the main module never depends on what it imports.
package opscheck

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/prometheus/prometheus/promql/parser"
)

// Unit is a systemd unit file: its sections, each a key's values in
// order (a key may repeat; an empty assignment is a value too).
type Unit map[string]map[string][]string

// ParseUnit reads a systemd unit file. It knows sections, key=value
// lines, comments and backslash continuations, which is all our units
// use; anything else is an error.
func ParseUnit(r io.Reader) (Unit, error) {
	u := Unit{}
	var section, pending string
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if pending != "" {
			line, pending = pending+" "+line, ""
		}
		if strings.HasSuffix(line, "\\") {
			pending = strings.TrimSpace(strings.TrimSuffix(line, "\\"))
			continue
		}
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[':
			if !strings.HasSuffix(line, "]") || len(line) < 3 {
				return nil, fmt.Errorf("line %d: bad section header %q", n, line)
			}
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || strings.TrimSpace(k) == "" {
				return nil, fmt.Errorf("line %d: want key=value, got %q", n, line)
			}
			if section == "" {
				return nil, fmt.Errorf("line %d: %q before any section", n, line)
			}
			k = strings.TrimSpace(k)
			u[section][k] = append(u[section][k], strings.TrimSpace(v))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if pending != "" {
		return nil, fmt.Errorf("line %d: continuation at end of file", n)
	}
	return u, nil
}

// Last is the value of key in section that systemd uses: the last one.
func (u Unit) Last(section, key string) (string, bool) {
	vs := u[section][key]
	if len(vs) == 0 {
		return "", false
	}
	return vs[len(vs)-1], true
}

var metricLiteral = regexp.MustCompile(`"(meridian_[a-z0-9_]+)"`)

// KnownMetrics returns the metric names Meridian's code registers: every
// "meridian_..." string literal in the non-test Go files under dirs.
// Literals that are not metrics (a prefix, say) only widen the set.
func KnownMetrics(dirs ...string) (map[string]bool, error) {
	known := map[string]bool{}
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, m := range metricLiteral.FindAllSubmatch(b, -1) {
				known[string(m[1])] = true
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if len(known) == 0 {
		return nil, fmt.Errorf("no meridian_ metric names found under %v", dirs)
	}
	return known, nil
}

// MetricsIn returns the metric names a PromQL expression selects.
func MetricsIn(expr string) ([]string, error) {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			name := vs.Name
			if name == "" {
				for _, m := range vs.LabelMatchers {
					if m.Name == "__name__" {
						name = m.Value
					}
				}
			}
			seen[name] = true
		}
		return nil
	})
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out, nil
}

// Unknown returns the names in names that are neither known metrics
// (with a histogram's _bucket, _sum and _count series), nor recorded by
// a rule, nor Prometheus's own up.
func Unknown(names []string, known, recorded map[string]bool) []string {
	var out []string
	for _, n := range names {
		base := n
		for _, s := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(n, s); ok && known[b] {
				base = b
			}
		}
		if !known[base] && !recorded[n] && n != "up" {
			out = append(out, n)
		}
	}
	return out
}

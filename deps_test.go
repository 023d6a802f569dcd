package meridian_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/meridian-mesh/meridian/"

// testSupport are the packages that exist for tests and benchmarks: no
// production package may import them. scripts/ may.
var testSupport = []string{
	"shared/testkit/",
	"edge/engine/enginetest",
	"edge/router/routertest",
	"control/controltest",
}

// mayNotImport says, for a production package's tree, what it must never
// import: imports run one way, scripts → edge, control → shared → proto.
var mayNotImport = map[string][]string{
	"proto/":   {"edge/", "control/", "shared/", "scripts/"},
	"shared/":  {"edge/", "control/", "scripts/"},
	"edge/":    {"control/", "scripts/"},
	"control/": {"edge/", "scripts/"},
}

func isTestSupport(pkg string) bool {
	for _, p := range testSupport {
		if strings.HasPrefix(pkg, p) {
			return true
		}
	}
	return false
}

// TestImportDirection checks every package's own (non-test) imports
// against the rules above. Tests may import what they need.
func TestImportDirection(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, "./...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg, ok := strings.CutPrefix(fields[0], module)
		if !ok || strings.HasPrefix(pkg, "scripts/") {
			continue
		}
		checked++
		for _, imp := range fields[1:] {
			imp, ok := strings.CutPrefix(imp, module)
			if !ok {
				continue
			}
			if isTestSupport(imp) && !isTestSupport(pkg) {
				t.Errorf("%s imports the test support package %s", pkg, imp)
			}
			for tree, banned := range mayNotImport {
				if !strings.HasPrefix(pkg, tree) {
					continue
				}
				for _, b := range banned {
					if strings.HasPrefix(imp, b) {
						t.Errorf("%s imports %s: %s must not import %s", pkg, imp, tree, b)
					}
				}
			}
		}
	}
	if checked < 20 {
		t.Fatalf("checked %d packages; go list found too few", checked)
	}
}

// TestReadmeLayoutNamesEveryPackage checks README's layout section names
// every package `go list ./...` finds: each package's path below its
// top-level folder, or its last element, appears in backquotes in that
// folder's bullet (a{b,c} in a name stands for ab and ac).
func TestReadmeLayoutNamesEveryPackage(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\nLayout (every package")
	if !ok {
		t.Fatal("README has no layout section")
	}
	section, _, _ = strings.Cut(section, "\n\n")
	names := map[string]map[string]bool{} // top-level folder → names in its bullet
	top := ""
	for _, line := range strings.Split(section, "\n") {
		if b, ok := strings.CutPrefix(line, "- `"); ok {
			top, _, _ = strings.Cut(b, "/")
			names[top] = map[string]bool{}
		}
		if top == "" {
			continue
		}
		quoted := strings.Split(line, "`")
		for i := 1; i < len(quoted); i += 2 {
			for _, n := range expandBraces(quoted[i]) {
				names[top][strings.Trim(n, "/")] = true
			}
		}
	}
	out, err := exec.Command("go", "list", "./...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		rel, ok := strings.CutPrefix(pkg, module)
		if !ok {
			continue
		}
		top, below, _ := strings.Cut(rel, "/")
		if !names[top][below] && !names[top][below[strings.LastIndex(below, "/")+1:]] {
			t.Errorf("README's layout section does not name %s (under the `%s/` bullet)", rel, top)
		}
	}
}

// expandBraces expands each a{b,c}d in s into abd and acd.
func expandBraces(s string) []string {
	open := strings.Index(s, "{")
	end := strings.Index(s, "}")
	if open < 0 || end < open {
		return []string{s}
	}
	var out []string
	for _, alt := range strings.Split(s[open+1:end], ",") {
		out = append(out, expandBraces(s[:open]+alt+s[end+1:])...)
	}
	return out
}

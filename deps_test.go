package meridian_test

import (
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

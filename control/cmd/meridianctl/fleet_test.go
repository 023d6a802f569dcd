package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/control/compile"
	"github.com/meridian-mesh/meridian/control/controltest"
	"github.com/meridian-mesh/meridian/control/fsm"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
)

// explicitKind is issue 23's fleet: a provider that names its wire
// format with kind rather than a preset.
const explicitKind = `providers:
  - id: mock
    kind: openai
    base_url: "http://127.0.0.1:9100/v1"
    secret_ref: "env:MERIDIAN_SECRET_MOCK_KEY"
`

// exampleFleets are the fleet files the repository ships.
var exampleFleets = []string{
	filepath.Join("..", "..", "..", "ops", "examples", "fleet.yaml"),
	filepath.Join("..", "..", "..", "scripts", "devmesh", "fleet.yaml"),
}

// providerForm names how a provider is written, in README's terms.
func providerForm(p *controlv1.Provider) string {
	switch {
	case p.GetKind() != "":
		return "explicit kind"
	case p.GetPreset() != "" && p.GetBaseUrl() != "":
		return "preset with base_url"
	case p.GetPreset() != "":
		return "preset"
	}
	return "none"
}

// TestFleetFiles applies each shipped fleet file, and issue 23's, to a
// real control plane: it applies, reads back identical, and applying it
// again is a no-op. The shipped files show every provider form README
// documents.
func TestFleetFiles(t *testing.T) {
	c := controltest.Start(t, 1, controltest.Options{})
	cli := ctl{t, map[string]string{"MERIDIAN_CONTROL_ADDR": c.Members[0].URL, "MERIDIAN_CONTROL_TOKEN": controltest.AdminToken}}
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.snap")
	cli.ok("cluster", "snapshot", "save", empty)
	issue := filepath.Join(dir, "explicit-kind.yaml")
	if err := os.WriteFile(issue, []byte(explicitKind), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, file := range append([]string{issue}, exampleFleets...) {
		t.Run(filepath.Base(filepath.Dir(file))+"/"+filepath.Base(file), func(t *testing.T) {
			cli := ctl{t, cli.env}
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			want, err := readFleet(raw)
			if err != nil {
				t.Fatal(err)
			}
			if file != issue {
				forms := map[string]bool{}
				for _, m := range want[fsm.KindProvider] {
					forms[providerForm(m.(*controlv1.Provider))] = true
				}
				for _, f := range []string{"preset", "preset with base_url", "explicit kind"} {
					if !forms[f] {
						t.Errorf("%s has no provider written as %s", file, f)
					}
				}
			}
			cli.ok("cluster", "snapshot", "restore", empty)
			if out := cli.ok("apply", "-f", file); !strings.Contains(out, "Applied:") {
				t.Fatalf("apply:\n%s", out)
			}
			checkFleet(t, cli, fleet(want), file, "apply -f "+file)
			// What edges would receive: the state compiles to a table.
			if _, err := compile.Compile(compile.DefaultConfig(), c.Members[0].Node.FSM().State()); err != nil {
				t.Fatalf("the applied fleet does not compile to a routing table: %v", err)
			}
			if out := cli.ok("apply", "-f", file); !strings.Contains(out, "No changes") || !strings.Contains(out, " 0 to change") {
				t.Fatalf("re-apply is not a no-op:\n%s", out)
			}
		})
	}

	// --dry-run shows the fields that change, nested ones by their path.
	cli.ok("cluster", "snapshot", "restore", empty)
	cli.ok("apply", "-f", exampleFleets[0])
	changed, _ := os.ReadFile(exampleFleets[0])
	s := strings.Replace(string(changed), "capacity: {gpus: 2,", "capacity: {gpus: 4,", 1)
	s = strings.Replace(s, "labels: {gpu: l4, tier: standard}", "labels: {gpu: h100, tier: standard}", 1)
	path := filepath.Join(dir, "changed.yaml")
	os.WriteFile(path, []byte(s), 0o600)
	out := cli.ok("apply", "-f", path, "--dry-run")
	for _, want := range []string{"~ node dub-1", "capacity.gpus: 2 → 4", `labels.gpu: "l4" → "h100"`, "0 to add, 1 to change"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "tier") {
		t.Errorf("dry run shows an unchanged label:\n%s", out)
	}

	// A zero is a zero however it is written: -0 sent to the API reads
	// back as 0, and against 0 in a file (YAML reads "-0" as the integer
	// 0) is no change.
	cli.ok("cluster", "snapshot", "restore", empty)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, b, _, err := c.Members[0].Do(ctx, "PUT", "/v1/control/regions/zero", controltest.AdminToken,
		strings.NewReader(`{"id":"zero","latitude":-0,"longitude":-0.0}`))
	if err != nil || st != 200 {
		t.Fatalf("put -0: %d %s %v", st, b, err)
	}
	if out := cli.ok("region", "get", "zero", "-json"); strings.Contains(out, "-0") {
		t.Errorf("-0 reads back as -0:\n%s", out)
	}
	zero := filepath.Join(dir, "zero.yaml")
	os.WriteFile(zero, []byte("regions:\n  - {id: zero, latitude: -0, longitude: 0}\n"), 0o600)
	if out := cli.ok("apply", "-f", zero, "--dry-run"); !strings.Contains(out, "No changes") {
		t.Errorf("-0 against 0 is a change:\n%s", out)
	}
}

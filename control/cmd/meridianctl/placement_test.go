package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/control/controltest"
	"github.com/meridian-mesh/meridian/control/publish"
	"github.com/meridian-mesh/meridian/edge/tablesync"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

// placement ls against a real control plane with distribution and a
// real edge table client: each placement's nodes as edges resolve them,
// and which of them report the model ready; a placement that could
// never run is refused naming the field.
func TestPlacementLs(t *testing.T) {
	c := controltest.Start(t, 1, controltest.Options{Distribution: true})
	m := c.Leader()
	cli := ctl{t, map[string]string{"MERIDIAN_CONTROL_ADDR": m.URL, "MERIDIAN_CONTROL_TOKEN": controltest.AdminToken}}

	if out := cli.ok("placement", "ls"); !strings.Contains(out, "No placements.") {
		t.Fatalf("placement ls on an empty fleet:\n%s", out)
	}
	cli.ok("region", "set", "eu-west", "latitude=53.3", "longitude=-6.3")
	cli.ok("region", "set", "ap-south", "latitude=19", "longitude=72.8")
	cli.ok("node", "set", "edge-a", "region=eu-west")
	cli.ok("node", "set", "edge-b", "region=eu-west")
	cli.ok("model", "set", "tiny", "local=true", "ollama=tinyllama")
	cli.ok("placement", "set", "tiny-a", "model=tiny", "node=edge-a")
	cli.ok("placement", "set", "tiny-eu", "model=tiny", "region=eu-west", "desired=2")
	code, _, errOut := cli.run("placement", "set", "tiny-ap", "model=tiny", "region=ap-south")
	if code != 1 || !strings.Contains(errOut, "placements[tiny-ap].region") || !strings.Contains(errOut, "holds no node") {
		t.Fatalf("placement on a region without nodes: exit %d: %s", code, errOut)
	}

	// No edge has reported: nothing is ready.
	wait.For(t, 10*time.Second, "the placements in the table", func() bool {
		out := cli.ok("placement", "ls")
		return strings.Contains(out, "tiny-a") && strings.Contains(out, "tiny-eu")
	})
	out := cli.ok("placement", "ls")
	for _, want := range []string{
		"ID", "MODEL", "PLACED ON", "DESIRED", "NODES", "READY",
		"tiny-a   tiny   node=edge-a     1        edge-a         0/1",
		"tiny-eu  tiny   region=eu-west  2        edge-a,edge-b  0/2",
	} {
		if !strings.Contains(out, want) {
			t.Fatalf("placement ls lacks %q:\n%s", want, out)
		}
	}

	// edge-a's engine serves tiny; its table client says so.
	var mu sync.Mutex
	ready := []string{"tiny"}
	cfg := tablesync.DefaultConfig()
	cfg.NodeID, cfg.Region, cfg.URLs, cfg.Token = "edge-a", "eu-west", []string{m.NATSURL()}, controltest.NATSToken
	cfg.Apply = func(tab *table.Table) error { return tab.Validate() }
	cfg.TableKeys = controltest.NodeTableKeys(t, m.Node)
	cfg.ReadyModels = func() []string {
		mu.Lock()
		defer mu.Unlock()
		return ready
	}
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := tablesync.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	wait.For(t, 10*time.Second, "edge-a ready in placement ls", func() bool {
		return strings.Contains(cli.ok("placement", "ls"), "1/2 (edge-a)")
	})
	out = cli.ok("placement", "ls")
	if !strings.Contains(out, "edge-a         1/1 (edge-a)") || !strings.Contains(out, "edge-a,edge-b  1/2 (edge-a)") {
		t.Fatalf("placement ls with edge-a ready:\n%s", out)
	}
	var ps []publish.PlacementStatus
	if err := json.Unmarshal([]byte(cli.ok("placement", "ls", "-json")), &ps); err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 || ps[1].ID != "tiny-eu" || ps[1].Region != "eu-west" || ps[1].Desired != 2 ||
		!slices.Equal(ps[1].Nodes, []string{"edge-a", "edge-b"}) || !slices.Equal(ps[1].Ready, []string{"edge-a"}) {
		t.Fatalf("placement ls -json: %+v", ps)
	}

	// status shows the edge's ready models and the placements.
	out = cli.ok("status")
	for _, want := range []string{"READY MODELS", "edge-a", "tiny", "tiny-eu", "1/2 (edge-a)"} {
		if !strings.Contains(out, want) {
			t.Fatalf("status lacks %q:\n%s", want, out)
		}
	}

	// The engine drops the model: the edge reports at once.
	mu.Lock()
	ready = nil
	mu.Unlock()
	s.ReportReady()
	wait.For(t, 10*time.Second, "edge-a no longer ready", func() bool {
		return strings.Contains(cli.ok("placement", "ls"), "edge-a,edge-b  0/2")
	})

	// Removing a placement works through the generic verb.
	cli.ok("placement", "rm", "tiny-a")
	wait.For(t, 10*time.Second, "tiny-a gone", func() bool {
		return !strings.Contains(cli.ok("placement", "ls"), "tiny-a")
	})
	if out := cli.ok("placement", "ls"); !strings.Contains(out, "region=eu-west  2        edge-a,edge-b  0/2") {
		t.Fatalf("the region placement alone:\n%s", out)
	}
}

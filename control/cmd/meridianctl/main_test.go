package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/control/controltest"
	"github.com/meridian-mesh/meridian/control/fsm"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

type ctl struct {
	t   cliTB
	env map[string]string
}

func (c ctl) run(args ...string) (int, string, string) {
	c.t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code := run(ctx, args, strings.NewReader(""), &out, &errOut, func(k string) string { return c.env[k] })
	return code, out.String(), errOut.String()
}

func (c ctl) ok(args ...string) string {
	c.t.Helper()
	code, out, errOut := c.run(args...)
	if code != 0 {
		c.t.Fatalf("meridianctl %s: exit %d: %s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func TestCLIAgainstCluster(t *testing.T) {
	c := controltest.Start(t, 3, controltest.Options{})
	// Talk to a follower: writes are forwarded.
	f := c.Followers()[0]
	cli := ctl{t, map[string]string{"MERIDIAN_CONTROL_ADDR": f.URL, "MERIDIAN_CONTROL_TOKEN": controltest.AdminToken}}
	fleet := filepath.Join("..", "..", "..", "ops", "examples", "fleet.yaml")

	// Declarative apply: dry run, apply, idempotent re-apply.
	out := cli.ok("apply", "-f", fleet, "--dry-run")
	if !strings.Contains(out, "+ region eu-west") || !strings.Contains(out, "Dry run") {
		t.Fatalf("dry run output:\n%s", out)
	}
	if n := f.Node.FSM().State().Count(fsm.KindRegion); n != 0 {
		t.Fatalf("dry run applied %d regions", n)
	}
	out = cli.ok("apply", "-f", fleet)
	if !strings.Contains(out, "Applied:") {
		t.Fatalf("apply output:\n%s", out)
	}
	c.WaitConverged()
	for _, k := range fsm.Kinds {
		if c.Leader().Node.FSM().State().Count(k.Name) == 0 {
			t.Errorf("apply left no %s", k.Plural)
		}
	}
	if out = cli.ok("apply", "-f", fleet); !strings.Contains(out, "No changes") {
		t.Fatalf("re-apply is not a no-op:\n%s", out)
	}

	// A changed file shows the field that changes, and --prune deletes
	// what the file dropped.
	raw, _ := os.ReadFile(fleet)
	changed := strings.Replace(string(raw), "monthly_budget: 5000", "monthly_budget: 6000", 1)
	changed = strings.Replace(changed, "  - {model: llama3.1-8b, provider: groq, input: 0.05, output: 0.08}\n", "", 1)
	path := filepath.Join(t.TempDir(), "fleet.yaml")
	os.WriteFile(path, []byte(changed), 0o600)
	out = cli.ok("apply", "-f", path, "--prune")
	if !strings.Contains(out, "~ tenant acme") || !strings.Contains(out, "monthly_budget: 5000 → 6000") || !strings.Contains(out, "- price groq/llama3.1-8b") {
		t.Fatalf("changed apply output:\n%s", out)
	}

	// Entity verbs, table and JSON.
	cli.ok("region", "set", "mars-1", "name=Mars Base", "latitude=12.5", "longitude=-40")
	out = cli.ok("region", "ls")
	if !strings.Contains(out, "mars-1") || !strings.Contains(out, "Mars Base") || !strings.HasPrefix(out, "ID") {
		t.Fatalf("region ls:\n%s", out)
	}
	cli.ok("region", "set", "mars-1", "latitude=13") // updates one field, keeps the rest
	var got map[string]any
	if err := json.Unmarshal([]byte(cli.ok("region", "get", "mars-1", "--json")), &got); err != nil {
		t.Fatal(err)
	}
	if got["name"] != "Mars Base" || got["latitude"] != 13.0 {
		t.Fatalf("region get --json: %v", got)
	}
	cli.ok("node", "set", "mars-n1", "region=mars-1", "addresses=10.9.0.1:80,10.9.0.2:80", "labels=gpu:h100", "capacity.gpus=8")
	out = cli.ok("node", "get", "mars-n1")
	if !strings.Contains(out, "gpus=8") || !strings.Contains(out, "gpu=h100") {
		t.Fatalf("node get:\n%s", out)
	}
	cli.ok("route", "set", "gpt-4o-mini", "targets=openai,groq:llama-3.1-70b", "strategy=cheapest")
	cli.ok("price", "set", "openai/gpt-4o-mini", "input=0.2", "output=0.8")

	// A new key is printed once; only its hash is stored.
	var nk struct{ ID, Key, Hash string }
	if err := json.Unmarshal([]byte(cli.ok("key", "new", "fresh", "tenant=acme", "--json")), &nk); err != nil || !strings.HasPrefix(nk.Key, "mk-") {
		t.Fatalf("key new: %+v %v", nk, err)
	}
	sum := sha256.Sum256([]byte(nk.Key))
	if want := "sha256:" + hex.EncodeToString(sum[:]); nk.Hash != want {
		t.Fatalf("stored hash %s, want %s", nk.Hash, want)
	}
	if out := cli.ok("key", "get", "fresh", "--json"); strings.Contains(out, nk.Key) {
		t.Fatal("the key itself was stored")
	}
	if code, _, errOut := cli.run("key", "new", "fresh"); code != 1 || !strings.Contains(errOut, "already exists") {
		t.Fatalf("key new over an existing key: exit %d: %s", code, errOut)
	}

	// Errors: clear, naming the field, non-zero exit.
	code, _, errOut := cli.run("node", "set", "bad", "region=nowhere")
	if code != 1 || !strings.Contains(errOut, "region") || !strings.Contains(errOut, "nowhere") {
		t.Fatalf("dangling reference: exit %d: %s", code, errOut)
	}
	code, _, errOut = cli.run("region", "set", "x", "latitude=200")
	if code != 1 || !strings.Contains(errOut, "latitude") {
		t.Fatalf("latitude 200: exit %d: %s", code, errOut)
	}
	code, _, errOut = cli.run("region", "rm", "mars-1")
	if code != 1 || !strings.Contains(errOut, "still referred to by node") {
		t.Fatalf("rm referenced: exit %d: %s", code, errOut)
	}
	if code, _, _ = cli.run("planet", "ls"); code != 2 {
		t.Fatalf("unknown kind: exit %d", code)
	}
	noTok := ctl{t, map[string]string{"MERIDIAN_CONTROL_ADDR": f.URL}}
	if code, _, errOut = noTok.run("region", "ls"); code != 1 || !strings.Contains(errOut, "unauthorized") {
		t.Fatalf("no token: exit %d: %s", code, errOut)
	}
	ro := ctl{t, map[string]string{"MERIDIAN_CONTROL_ADDR": f.URL, "MERIDIAN_CONTROL_TOKEN": controltest.ReadToken}}
	if code, _, errOut = ro.run("region", "rm", "eu-west"); code != 1 || !strings.Contains(errOut, "forbidden") {
		t.Fatalf("read-only rm: exit %d: %s", code, errOut)
	}

	// Status.
	out = cli.ok("status")
	if !strings.Contains(out, "Leader: n") || !strings.Contains(out, "regions") || strings.Contains(out, " - ") {
		t.Fatalf("status:\n%s", out)
	}
	var st struct {
		Cluster struct {
			Servers []any `json:"servers"`
		} `json:"cluster"`
		Entities map[string]int `json:"entities"`
	}
	if err := json.Unmarshal([]byte(cli.ok("status", "--json")), &st); err != nil || len(st.Cluster.Servers) != 3 || st.Entities["regions"] != 4 {
		t.Fatalf("status --json: %+v %v", st, err)
	}

	// Snapshot save, damage, restore.
	snap := filepath.Join(t.TempDir(), "fleet.snap")
	cli.ok("cluster", "snapshot", "save", snap)
	cli.ok("node", "rm", "mars-n1")
	cli.ok("region", "rm", "mars-1")
	cli.ok("cluster", "snapshot", "restore", snap)
	c.WaitConverged()
	if _, ok := c.Leader().Node.FSM().State().Get(fsm.KindRegion, "mars-1"); !ok {
		t.Fatal("snapshot restore did not bring mars-1 back")
	}
	if out = cli.ok("region", "get", "mars-1"); !strings.Contains(out, "Mars Base") {
		t.Fatalf("after restore:\n%s", out)
	}
	if code, _, _ = cli.run("cluster", "snapshot", "restore", fleet); code != 1 {
		t.Fatal("restoring a file that is not a snapshot succeeded")
	}
}

func TestCLIJoinRemoveAndTLS(t *testing.T) {
	c := controltest.Start(t, 1, controltest.Options{})
	cli := ctl{t, map[string]string{"MERIDIAN_CONTROL_ADDR": c.Members[0].URL, "MERIDIAN_CONTROL_TOKEN": controltest.AdminToken}}
	m := c.AddMember()
	if out := cli.ok("cluster", "join", m.URL); !strings.Contains(out, m.ID) {
		t.Fatalf("join: %s", out)
	}
	wait.For(t, 30*time.Second, "two voters", func() bool {
		s, err := c.Members[0].Node.Servers()
		return err == nil && len(s) == 2
	})
	cli.ok("cluster", "remove", m.ID)
	s, _ := c.Leader().Node.Servers()
	if len(s) != 1 {
		t.Fatalf("%d servers after remove", len(s))
	}

	dir := t.TempDir()
	ca, out := filepath.Join(dir, "ca"), filepath.Join(dir, "node")
	cli.ok("tls", "ca", "--dir", ca)
	cli.ok("tls", "cert", "--ca-dir", ca, "--node", "control-1", "--host", "127.0.0.1", "--host", "localhost", "--out", out)
	ents, err := os.ReadDir(out)
	if err != nil || len(ents) == 0 {
		t.Fatalf("tls cert wrote nothing: %v", err)
	}
	if code, _, _ := cli.run("tls", "cert", "--ca-dir", ca); code != 2 {
		t.Fatal("tls cert without --node is not a usage error")
	}
}

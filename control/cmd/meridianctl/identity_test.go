package main

import (
	"strings"
	"testing"

	"github.com/meridian-mesh/meridian/control/controltest"
	"github.com/meridian-mesh/meridian/control/fsm"
	"github.com/meridian-mesh/meridian/control/seal"
)

func TestCLINodeTokenAndRevoke(t *testing.T) {
	kek, _ := seal.New([]byte("test-kek-32-bytes-0123456789abcd"))
	c := controltest.Start(t, 1, controltest.Options{KEK: kek})
	m := c.Leader()
	cli := ctl{t, map[string]string{"MERIDIAN_CONTROL_ADDR": m.URL, "MERIDIAN_CONTROL_TOKEN": controltest.AdminToken}}
	cli.ok("region", "set", "eu", "latitude=50", "longitude=8")
	tok := strings.TrimSpace(cli.ok("node", "token", "edge-9", "--region", "eu", "--ttl", "30m"))
	if !strings.HasPrefix(tok, "mjt_") {
		t.Fatalf("node token printed %q", tok)
	}
	rec, ok := m.Node.FSM().State().JoinToken(fsm.HashToken(tok))
	if !ok || rec.GetNode() != "edge-9" || rec.GetUsed() {
		t.Fatalf("token record = %v", rec)
	}
	if code, _, errOut := cli.run("node", "token", "edge-9", "--ttl", "soon"); code != exitUsage {
		t.Fatalf("bad --ttl: exit %d %s", code, errOut)
	}
	// A node in the fleet that never joined can still be revoked.
	cli.ok("node", "set", "n1", "region=eu")
	cli.ok("node", "revoke", "n1")
	if !m.Node.FSM().State().Revoked("n1") {
		t.Fatal("node revoke did not record the revocation")
	}
	if out := cli.ok("node", "identities"); !strings.Contains(out, "n1") {
		t.Fatalf("node identities:\n%s", out)
	}
	if code, _, _ := cli.run("node", "revoke", "ghost"); code != exitError {
		t.Fatalf("revoking an unknown node: exit %d", code)
	}
	// `node ls` is still the entity's.
	if out := cli.ok("node", "ls"); !strings.Contains(out, "n1") {
		t.Fatalf("node ls:\n%s", out)
	}
}

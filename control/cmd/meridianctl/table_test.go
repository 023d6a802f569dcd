package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/control/publish"
)

func TestPrintDistribution(t *testing.T) {
	var out bytes.Buffer
	c := &cli{stdout: &out}
	now := time.Now()
	c.printDistribution(&publish.Status{
		Leader: true, StateRevision: 12, TableRevision: 10, PublishedRevision: 10,
		Rejected: "table rejected at revision 12: routes[orphan]: has no possible target", RejectedRevision: 12,
		Edges: []publish.EdgeStatus{
			{Node: "edge-a", Region: "eu", Revision: 10, LastReport: now},
			{Node: "edge-b", Region: "us", Revision: 8, Lag: 2, LastReport: now},
			{Node: "edge-c", Revision: 10, Stale: true, LastReport: now, RejectedRevision: 11, RejectedReason: "too large"},
			{Node: "edge-d", Revision: 4, Lag: 6, Silent: true, LastReport: now.Add(-time.Minute)},
		},
	}, nil)
	s := out.String()
	for _, want := range []string{
		"Routing table: revision 10 (state 12), published 10 by this node",
		"REJECTED at revision 12, not published: table rejected at revision 12: routes[orphan]",
		"edge-a", "current", "edge-b", "behind", "edge-c", "stale", "11: too large", "edge-d", "silent", "1m0s ago",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
	out.Reset()
	c.printDistribution(nil, errors.New("404"))
	if !strings.Contains(out.String(), "unavailable") {
		t.Fatalf("error output: %s", out.String())
	}
}

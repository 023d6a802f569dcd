package node

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/meridian-mesh/meridian/edge/config"
	"github.com/meridian-mesh/meridian/shared/table"
)

// TestEdgesSeeEachOther starts two edges with gossip on loopback, the
// second seeded with the first, and checks that each lists the other at
// /v1/meridian/members with its region and ready models, and that a
// draining edge is reported as such.
func TestEdgesSeeEachOther(t *testing.T) {
	key := table.Secret("AAECAwQFBgcICQoLDA0ODw==")
	gossipOn := func(id, region string, seeds ...string) func(*config.Config) {
		return func(c *config.Config) {
			c.NodeID, c.Region = id, region
			c.Gossip = config.Gossip{Enabled: true, Bind: "127.0.0.1:0", Advertise: "127.0.0.1",
				Cluster: "meridian-test", Profile: "local", Keys: []table.Secret{key}, Seeds: seeds}
		}
	}
	a := startMesh(t, gossipOn("edge-a", "eu-west"))
	b := startMesh(t, gossipOn("edge-b", "us-east", a.node.Gossip().Addr()))

	type member struct {
		ID          string   `json:"id"`
		Region      string   `json:"region"`
		State       string   `json:"state"`
		ReadyModels []string `json:"ready_models"`
		Draining    bool     `json:"draining"`
	}
	members := func(m *testMesh) map[string]member {
		resp, err := http.Get(m.url + "/v1/meridian/members")
		if err != nil {
			return nil
		}
		defer resp.Body.Close()
		var out struct {
			Members []member `json:"members"`
		}
		if json.NewDecoder(resp.Body).Decode(&out) != nil {
			return nil
		}
		byID := map[string]member{}
		for _, mb := range out.Members {
			byID[mb.ID] = mb
		}
		return byID
	}
	a.waitFor("edge-a to see edge-b", func() bool {
		mb, ok := members(a)["edge-b"]
		return ok && mb.State == "alive" && mb.Region == "us-east"
	})
	// Ready models are what an engine has loaded, not the table's list:
	// these edges run none, so they offer their peers nothing to route.
	if mb := members(a)["edge-b"]; len(mb.ReadyModels) != 0 {
		t.Fatalf("edge-b gossips ready models %v without an engine", mb.ReadyModels)
	}
	b.waitFor("edge-b to see edge-a", func() bool {
		mb, ok := members(b)["edge-a"]
		return ok && mb.State == "alive" && mb.Region == "eu-west"
	})

	b.stop() // drain and leave
	a.waitFor("edge-a to see edge-b leave", func() bool {
		mb, ok := members(a)["edge-b"]
		return ok && (mb.State == "left" || mb.State == "dead")
	})
}

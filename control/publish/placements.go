package publish

import (
	"slices"

	tablev1 "github.com/meridian-mesh/meridian/proto/table/v1"
	"github.com/meridian-mesh/meridian/shared/table"
)

// PlacementStatus is one placement of the last valid table: the nodes
// every edge resolves it to, and which of them report the model ready.
type PlacementStatus struct {
	ID    string `json:"id"`
	Model string `json:"model"`
	// Node or Region, as written.
	Node   string `json:"node,omitempty"`
	Region string `json:"region,omitempty"`
	// Desired is the number of the region's nodes wanted; 1 for a
	// placement on a node.
	Desired uint32 `json:"desired"`
	// Nodes are the nodes the placement resolves to, sorted: the node
	// itself, or the region's nodes rendezvous hashing picks (shared/table),
	// fewer than Desired when the region holds fewer nodes.
	Nodes []string `json:"nodes"`
	// Ready are those of Nodes whose last report, from an edge that is
	// not silent, lists the model among its ready models.
	Ready []string `json:"ready"`
}

// resolvePlacements lists the table's placements with the nodes each
// resolves to in edge, the table as edges compile it. A region placement
// is resolved on its own, so a node the same model is also placed on by
// another placement is not counted against this one: edges take the
// union (edge.PlacedOn), operators read each placement.
func resolvePlacements(t *tablev1.RoutingTable, edge *table.Compiled) []PlacementStatus {
	if edge == nil {
		return nil
	}
	ps := t.GetEntities().GetPlacements()
	perModel := make(map[string]int, len(ps))
	for _, p := range ps {
		perModel[p.GetModel()]++
	}
	out := make([]PlacementStatus, 0, len(ps))
	for _, p := range ps {
		st := PlacementStatus{ID: p.GetId(), Model: p.GetModel(), Node: p.GetNode(), Region: p.GetRegion(), Desired: max(p.GetDesired(), 1), Nodes: []string{}}
		placed := edge.PlacedOn(p.GetModel())
		switch {
		case p.GetNode() != "":
			if slices.Contains(placed, p.GetNode()) {
				st.Nodes = []string{p.GetNode()}
			}
		case perModel[p.GetModel()] == 1:
			st.Nodes = slices.Clone(placed) // this placement's alone
		default:
			st.Nodes = placedInRegion(edge, p.GetModel(), p.GetRegion(), int(st.Desired))
		}
		out = append(out, st)
	}
	return out
}

// placedInRegion is where a region placement alone puts a model: the
// edge's own compiler run on the region's fleet and that one placement.
func placedInRegion(edge *table.Compiled, model, region string, desired int) []string {
	m, ok := edge.Model(model)
	if !ok || m.Local == nil {
		return []string{}
	}
	full := edge.Table()
	one, err := table.Compile(&table.Table{
		Regions: full.Regions, Nodes: full.Nodes, Models: []table.Model{*m},
		Placements: []table.Placement{{Model: model, Region: region, Desired: desired}},
	})
	if err != nil {
		return []string{} // the whole table compiled, so this does too
	}
	return slices.Clone(one.PlacedOn(model))
}

// readyOn fills each placement's Ready from the edges' reports.
func readyOn(placements []PlacementStatus, edges []EdgeStatus) []PlacementStatus {
	byNode := make(map[string]*EdgeStatus, len(edges))
	for i := range edges {
		if !edges[i].Silent {
			byNode[edges[i].Node] = &edges[i]
		}
	}
	out := make([]PlacementStatus, len(placements))
	for i, pl := range placements {
		pl.Ready = []string{}
		for _, n := range pl.Nodes {
			if e := byNode[n]; e != nil && slices.Contains(e.ReadyModels, pl.Model) {
				pl.Ready = append(pl.Ready, n)
			}
		}
		out[i] = pl
	}
	return out
}

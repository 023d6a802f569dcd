package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"text/tabwriter"

	"github.com/meridian-mesh/meridian/control/client"
	"github.com/meridian-mesh/meridian/control/fsm"
	"github.com/meridian-mesh/meridian/control/publish"
)

// placements lists the placements of the table edges serve from, each
// with the nodes it resolves to and which of them report the model
// ready. A node that runs no distribution has neither: it lists the
// placements as written.
func (c *cli) placements(ctx context.Context, cl *client.Client) error {
	st, err := distributionStatus(ctx, cl)
	var ce *client.Error
	if errors.As(err, &ce) && ce.Status == http.StatusNotFound {
		fmt.Fprintln(c.stderr, "meridianctl: this node distributes no routing table, so placements are shown as written, without nodes or readiness")
		k, _ := fsm.KindByName(fsm.KindPlacement)
		ms, _, err := cl.List(ctx, k.Name, c.readOpts())
		if err != nil {
			return err
		}
		return c.printEntities(k, ms, true)
	}
	if err != nil {
		return err
	}
	if c.json {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st.Placements)
	}
	c.printPlacements(st, true)
	return nil
}

// printPlacements prints a table of placements, after the newest state's
// rejection if there is one and sayRejected, e.g.
//
//	ID       MODEL  PLACED ON       DESIRED  NODES          READY
//	tiny-eu  tiny   region=eu-west  2        edge-a,edge-b  1/2 (edge-a)
func (c *cli) printPlacements(st *publish.Status, sayRejected bool) {
	if sayRejected && st.Rejected != "" {
		fmt.Fprintf(c.stdout, "The newest state (revision %d) was rejected, so these are the placements of revision %d, which edges serve: %s\n\n",
			st.RejectedRevision, st.TableRevision, st.Rejected)
	}
	if len(st.Placements) == 0 {
		fmt.Fprintln(c.stdout, "No placements.")
		return
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tMODEL\tPLACED ON\tDESIRED\tNODES\tREADY")
	for _, p := range st.Placements {
		on := "node=" + p.Node
		if p.Region != "" {
			on = "region=" + p.Region
		}
		nodes := dash(strings.Join(p.Nodes, ","))
		if short := int(p.Desired) - len(p.Nodes); short > 0 {
			nodes += fmt.Sprintf(" (%d short)", short)
		}
		ready := fmt.Sprintf("%d/%d", len(p.Ready), len(p.Nodes))
		if len(p.Ready) > 0 {
			ready += " (" + strings.Join(p.Ready, ",") + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", p.ID, p.Model, on, p.Desired, nodes, ready)
	}
	tw.Flush()
}

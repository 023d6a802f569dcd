package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/meridian-mesh/meridian/control/client"
	"github.com/meridian-mesh/meridian/control/distribution"
	"github.com/meridian-mesh/meridian/control/publish"
)

// distributionStatus asks the node for its view of table distribution;
// nil when the node runs none.
func distributionStatus(ctx context.Context, cl *client.Client) (*publish.Status, error) {
	resp, err := cl.Do(ctx, http.MethodGet, distribution.StatusPath, nil, "")
	if err != nil {
		return nil, err
	}
	var st publish.Status
	if err := json.Unmarshal(resp.Body, &st); err != nil {
		return nil, fmt.Errorf("distribution status: %w", err)
	}
	return &st, nil
}

// printDistribution prints the table's revision, a rejection if there is
// one, and each edge's applied revision, lag and staleness.
func (c *cli) printDistribution(st *publish.Status, err error) {
	fmt.Fprintln(c.stdout)
	var ce *client.Error
	if errors.As(err, &ce) && ce.Status == http.StatusNotFound {
		fmt.Fprintln(c.stdout, "Routing table: not distributed by this node (start meridian-control with NATS credentials, MERIDIAN_NATS_TOKEN or MERIDIAN_NATS_PASSWORD)")
		return
	}
	if err != nil {
		fmt.Fprintf(c.stdout, "Routing table: unavailable on this node (%v)\n", err)
		return
	}
	fmt.Fprintf(c.stdout, "Routing table: revision %d (state %d)", st.TableRevision, st.StateRevision)
	if st.Leader {
		fmt.Fprintf(c.stdout, ", published %d by this node", st.PublishedRevision)
	}
	fmt.Fprintln(c.stdout)
	if st.Rejected != "" {
		fmt.Fprintf(c.stdout, "REJECTED at revision %d, not published: %s\n", st.RejectedRevision, st.Rejected)
	}
	defer func() {
		if len(st.Placements) > 0 {
			fmt.Fprintln(c.stdout)
			c.printPlacements(st, false) // a rejection is said above

		}
	}()
	if len(st.Edges) == 0 {
		fmt.Fprintln(c.stdout, "No edge has reported.")
		return
	}
	fmt.Fprintln(c.stdout)
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "EDGE\tREGION\tREVISION\tLAG\tSTATE\tREADY MODELS\tLAST REPORT\tREJECTED")
	for _, e := range st.Edges {
		state := "current"
		switch {
		case e.Silent:
			state = "silent"
		case e.Stale:
			state = "stale"
		case e.Ahead:
			state = "ahead" // restored from an older backup: never "current"
		case e.Lag > 0:
			state = "behind"
		}
		rejected := "-"
		if e.RejectedReason != "" {
			rejected = fmt.Sprintf("%d: %s", e.RejectedRevision, e.RejectedReason)
		}
		if e.Unverified != "" {
			rejected = "unverified " + e.Unverified
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s ago\t%s\n", e.Node, dash(e.Region), e.Revision, e.Lag, state,
			dash(strings.Join(e.ReadyModels, ",")), time.Since(e.LastReport).Round(time.Second), rejected)
	}
	tw.Flush()
}

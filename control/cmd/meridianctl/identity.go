package main

import (
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"
)

// nodeIdentity runs `node token`, `node revoke` and `node identities`;
// every other `node` command is the entity's.
func (c *cli) nodeIdentity(ctx context.Context, rest []string) error {
	cl, err := c.client()
	if err != nil {
		return err
	}
	switch {
	case len(rest) == 2 && rest[0] == "token":
		ttl, err := time.ParseDuration(c.ttl)
		if err != nil || ttl < time.Second {
			return fmt.Errorf("%w: --ttl must be a duration of at least 1s, like 1h", errUsage)
		}
		tr, err := cl.JoinToken(ctx, rest[1], c.region, ttl)
		if err != nil {
			return err
		}
		if c.json {
			return json.NewEncoder(c.stdout).Encode(tr)
		}
		// The token alone on stdout, so scripts can capture it; it is
		// shown once and the control plane keeps only its hash.
		fmt.Fprintln(c.stdout, tr.Token)
		fmt.Fprintf(c.stderr, "join token for %s, valid until %s, usable once\n", tr.Node, tr.ExpiresAt.Format(time.RFC3339))
		return nil
	case len(rest) == 2 && rest[0] == "revoke":
		idx, err := cl.RevokeNode(ctx, rest[1])
		if err != nil {
			return err
		}
		return c.done("revoked node "+rest[1], idx)
	case len(rest) == 1 && rest[0] == "identities":
		ids, err := cl.Identities(ctx)
		if err != nil {
			return err
		}
		if c.json {
			return json.NewEncoder(c.stdout).Encode(ids)
		}
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tREGION\tJOINED\tREVOKED")
		for _, n := range ids {
			joined, revoked := "-", "-"
			if n.JoinedAt != nil {
				joined = n.JoinedAt.Format(time.RFC3339)
			}
			if n.RevokedAt != nil {
				revoked = n.RevokedAt.Format(time.RFC3339)
			} else if n.Revoked {
				revoked = "yes"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", n.Node, n.Region, joined, revoked)
		}
		return tw.Flush()
	}
	return fmt.Errorf("%w: node token ID [--region R] [--ttl 1h] | node revoke ID | node identities", errUsage)
}

package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/meridian-mesh/meridian/control/api"
	"github.com/meridian-mesh/meridian/control/seal"
)

// tableKey prints what an edge pins: its control.table_public_key and
// control.cluster_id lines.
func (c *cli) tableKey(ctx context.Context, args []string) error {
	cl, err := c.client()
	if err != nil {
		return err
	}
	var k *api.TableKey
	switch {
	case len(args) == 0:
		k, err = cl.TableKey(ctx)
	case len(args) == 1 && (args[0] == "stage" || args[0] == "promote"):
		k, err = cl.RotateTableKey(ctx, args[0])
	default:
		return fmt.Errorf("%w: table-key [stage|promote]", errUsage)
	}
	if err != nil {
		return err
	}
	if c.json {
		b, _ := json.MarshalIndent(k, "", "  ")
		fmt.Fprintln(c.stdout, string(b))
		return nil
	}
	if k.NextPublicKey == "" {
		fmt.Fprintf(c.stdout, "# the edge's control: section (epoch %d)\ntable_public_key: %s\ncluster_id: %s\n", k.Epoch, k.PublicKey, k.ClusterID)
		return nil
	}
	fmt.Fprintf(c.stdout, "# the edge's control: section (epoch %d); a rotation is staged: pin both, then `meridianctl table-key promote`\ntable_public_keys: [%s, %s]\ncluster_id: %s\n",
		k.Epoch, k.PublicKey, k.NextPublicKey, k.ClusterID)
	return nil
}

// kek writes a new key-encryption key file for meridian-control's
// -kek-file.
func (c *cli) kek(args []string) error {
	if len(args) != 2 || args[0] != "new" {
		return fmt.Errorf("%w: kek new FILE", errUsage)
	}
	if err := seal.Generate(args[1]); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "wrote %s (mode 0600); give every control node the same file with -kek-file\n", args[1])
	return nil
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/meridian-mesh/meridian/control/fsm"
	"github.com/meridian-mesh/meridian/shared/pki"
)

func (c *cli) status(ctx context.Context) error {
	cl, err := c.client()
	if err != nil {
		return err
	}
	info, err := cl.Cluster(ctx)
	if err != nil {
		return err
	}
	counts := map[string]int{}
	for _, k := range fsm.Kinds {
		ms, _, err := cl.List(ctx, k.Name, c.readOpts())
		if err != nil {
			return err
		}
		counts[k.Plural] = len(ms)
	}
	dist, derr := distributionStatus(ctx, cl)
	if c.json {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		out := map[string]any{"cluster": info, "entities": counts}
		if derr == nil {
			out["distribution"] = dist
		}
		return enc.Encode(out)
	}
	leader := "none"
	for _, s := range info.Servers {
		if s.ID == info.LeaderID {
			leader = fmt.Sprintf("%s %s (%s)", dash(s.Name), dash(s.APIAddr), s.ID)
		}
	}
	fmt.Fprintf(c.stdout, "Leader: %s\nServing node: %s (%s, term %d, applied index %d, state index %d)\n\n",
		leader, info.Self, info.Stats.State, info.Stats.Term, info.Stats.AppliedIndex, info.Stats.StateIndex)
	c.printServers(info.Servers)
	fmt.Fprintln(c.stdout)
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tCOUNT")
	for _, k := range fsm.Kinds {
		fmt.Fprintf(tw, "%s\t%d\n", k.Plural, counts[k.Plural])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	c.printDistribution(dist, derr)
	return nil
}

func (c *cli) printServers(servers any) {
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tRAFT\tAPI\tVOTER\tLEADER")
	b, _ := json.Marshal(servers)
	var rows []struct {
		ID       string `json:"id"`
		Name     string `json:"name"`
		RaftAddr string `json:"raft_addr"`
		APIAddr  string `json:"api_addr"`
		Voter    bool   `json:"voter"`
		Leader   bool   `json:"leader"`
	}
	json.Unmarshal(b, &rows)
	for _, s := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, dash(s.Name), s.RaftAddr, dash(s.APIAddr), render(s.Voter), render(s.Leader))
	}
	tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (c *cli) cluster(ctx context.Context, rest []string) error {
	if len(rest) == 0 {
		return fmt.Errorf("%w: cluster needs join, remove, transfer or snapshot", errUsage)
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	switch {
	case rest[0] == "join" && len(rest) == 2:
		self, err := cl.Join(ctx, rest[1])
		if err != nil {
			return err
		}
		if c.json {
			return json.NewEncoder(c.stdout).Encode(self)
		}
		fmt.Fprintf(c.stdout, "joined %s (%s) at %s as a voter\n", self.ID, self.Name, self.RaftAddr)
		return nil
	case rest[0] == "remove" && len(rest) == 2:
		if err := cl.RemovePeer(ctx, rest[1]); err != nil {
			return err
		}
		return c.done("removed "+rest[1], 0)
	case rest[0] == "transfer" && len(rest) == 1:
		from, err := cl.Transfer(ctx)
		if err != nil {
			return err
		}
		if c.json {
			return json.NewEncoder(c.stdout).Encode(map[string]string{"from": from})
		}
		fmt.Fprintf(c.stdout, "%s handed leadership over\n", from)
		return nil
	case rest[0] == "snapshot" && len(rest) == 3 && rest[1] == "save":
		var buf bytes.Buffer
		idx, err := cl.SnapshotSave(ctx, &buf)
		if err != nil {
			return err
		}
		if err := writeFileAtomic(rest[2], buf.Bytes()); err != nil {
			return err
		}
		return c.done(fmt.Sprintf("saved snapshot to %s (%d bytes)", rest[2], buf.Len()), idx)
	case rest[0] == "snapshot" && len(rest) == 3 && rest[1] == "restore":
		raw, err := readFile(c.stdin, rest[2])
		if err != nil {
			return err
		}
		idx, err := cl.SnapshotRestore(ctx, bytes.NewReader(raw))
		if err != nil {
			return err
		}
		return c.done("restored snapshot from "+rest[2], idx)
	}
	return fmt.Errorf("%w: cluster join API_ADDR | remove NODE_ID | transfer | snapshot save|restore FILE", errUsage)
}

// writeFileAtomic writes a file whole or not at all.
func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".snapshot-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chmod(tmp.Name(), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return os.Rename(tmp.Name(), path)
}

func (c *cli) tls(rest []string) error {
	validFor := time.Duration(c.days) * 24 * time.Hour
	if c.days <= 0 {
		return fmt.Errorf("%w: --days must be positive", errUsage)
	}
	switch {
	case len(rest) == 1 && rest[0] == "ca":
		if c.dir == "" {
			return fmt.Errorf("%w: tls ca needs --dir", errUsage)
		}
		if err := pki.WriteCA(c.dir, c.name, validFor); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "wrote a CA to %s, valid %d days\n", c.dir, c.days)
		return nil
	case len(rest) == 1 && rest[0] == "cert":
		if c.caDir == "" || c.node == "" || c.out == "" {
			return fmt.Errorf("%w: tls cert needs --ca-dir, --node and --out", errUsage)
		}
		write, what := pki.WriteNodeCert, "node certificate"
		if c.control {
			write, what = pki.WriteServerCert, "control-API certificate (not usable as a link peer)"
		}
		if err := write(c.caDir, c.out, c.node, c.hosts, validFor); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "wrote a %s for %s to %s, valid %d days\n", what, c.node, c.out, c.days)
		return nil
	}
	return fmt.Errorf("%w: tls ca | tls cert", errUsage)
}

package node

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"slices"
	"strconv"

	"github.com/meridian-mesh/meridian/edge/config"
	"github.com/meridian-mesh/meridian/edge/tablesync"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/meridian-mesh/meridian/shared/tablewire"
)

// HeaderTableRevision names the routing table revision that served a
// response, with "; stale" when the edge cannot confirm it is current:
// "42" or "42; stale".
const HeaderTableRevision = "X-Meridian-Table-Rev" // canonical, so Set does not rewrite it per request

// seedTable installs the static table from the config. With a control
// plane configured, it goes through the table client, the path every
// control table takes, as revision 0; the client then replaces it with
// the table on disk and the control plane's.
func (n *Node) seedTable() error {
	if !n.cfg.Control.Enabled() {
		tab := n.cfg.EffectiveTable()
		if err := n.gw.SetTable(&tab); err != nil {
			return err
		}
		n.place(n.gw.Table())
		return nil
	}
	c := n.cfg.Control
	tlsCfg, err := c.TLSConfig()
	if err != nil {
		return err
	}
	keys, cluster, err := n.tableTrust(tableTrust{})
	if err != nil {
		return err
	}
	sc := tablesync.DefaultConfig()
	sc.TableKeys, sc.ClusterID = keys, cluster
	sc.NodeID, sc.Region, sc.URLs = n.cfg.NodeID, n.cfg.Region, c.NATSURLs
	sc.User, sc.Password, sc.Token, sc.TLS = c.User, c.Password.Reveal(), c.Token.Reveal(), tlsCfg
	if n.id != nil {
		// The edge's own NATS identity replaces the shared credential.
		sc.User, sc.Password, sc.Token = "", "", ""
		sc.NKey, sc.Sign = n.id.natsAuth()
	}
	sc.CachePath, sc.MaxBytes, sc.StaleAfter, sc.ReportInterval = c.CachePath(n.cfg.NodeID), c.MaxTableBytes, c.StaleAfter, c.ReportInterval
	sc.Resolver.LocalEngine = n.engine != nil
	sc.Resolver.Policy = tablewire.SecretPolicy{EnvPrefix: c.SecretEnvPrefix, Dir: c.SecretsDir}
	sc.Apply, sc.Patch = n.applyTable, n.patchTable
	sc.ReadyModels = n.readyModels
	sc.Logger = n.log
	sc.Registerer = n.metrics.Registerer()
	if n.sync, err = tablesync.New(sc); err != nil {
		return err
	}
	if n.id != nil {
		n.id.onTrust = n.trustRenewed
	}
	tab := n.cfg.Table // applyTable adds the local engine
	return n.sync.Seed(&tab)
}

// tableTrust is the table keys and cluster ID the edge checks control
// messages against. Keys pinned in the config are the only ones used: a
// key the control plane delivers never replaces or joins them. Without
// pinned keys, the ones delivered with the node certificate are used
// (from delivered, or the identity's latest when delivered is empty). A
// pinned cluster ID likewise wins over the delivered one.
func (n *Node) tableTrust(delivered tableTrust) ([]ed25519.PublicKey, string, error) {
	c := n.cfg.Control
	if delivered.Keys == nil && n.id != nil {
		delivered = n.id.tableTrust()
	}
	cluster := c.ClusterID
	if cluster == "" {
		cluster = delivered.ClusterID
	}
	if len(c.Keys()) > 0 {
		keys, err := tablesync.ParsePublicKeys(c.Keys())
		return keys, cluster, err
	}
	keys, err := delivered.parse()
	if err != nil {
		return nil, "", fmt.Errorf("control: no table public key pinned (control.table_public_key) nor delivered with the node certificate: %w", err)
	}
	return keys, cluster, nil
}

// trustRenewed takes the table keys a renewal brought: the tables'
// trust follows them unless the config pins keys, in which case a
// delivered key the config lacks is only reported.
func (n *Node) trustRenewed(t tableTrust) {
	if pinned := n.cfg.Control.Keys(); len(pinned) > 0 {
		pk, _ := tablesync.ParsePublicKeys(pinned) // validated with the config
		for _, k := range t.Keys {
			if d, err := tablewire.ParsePublicKey(k); err == nil && !slices.ContainsFunc(pk, func(p ed25519.PublicKey) bool { return p.Equal(d) }) {
				n.log.Warn("the control plane signs (or will sign) tables with a key this edge's config does not pin; add it to control.table_public_keys, or remove the pinned keys to take them from the node certificate",
					"key", k, "pinned", pinned)
			}
		}
		return
	}
	keys, cluster, err := n.tableTrust(t)
	if err == nil {
		err = n.sync.SetTrust(keys, cluster)
	}
	if err != nil {
		n.log.Error("identity: the renewal's table keys are unusable; keeping the previous ones", "err", err)
	}
}

// applyTable installs a table from the control plane (or the disk, or
// the config) with the local engine's models added as the config adds
// them, and tells the fleet.
func (n *Node) applyTable(t *table.Table) error {
	c := n.cfg
	c.Table = *t
	eff := c.EffectiveTable()
	if err := n.gw.SetTable(&eff); err != nil {
		return err
	}
	n.place(n.gw.Table())
	if n.gossip != nil {
		n.publishTable()
	}
	if n.link != nil && n.id != nil {
		// A peer this table revokes or drops loses its links now.
		n.link.Revalidate()
	}
	if n.authMode() == config.AuthKeys && !n.gw.Table().HasKeys() {
		n.warnNoKeys()
	}
	return nil
}

// startTable starts following the control plane, when one is
// configured; it returns once the first snapshot arrived or failed.
func (n *Node) startTable(ctx context.Context) (stop func(), err error) {
	if n.sync == nil {
		return func() {}, nil
	}
	if err := n.sync.Start(ctx); err != nil {
		return nil, err
	}
	return n.sync.Close, nil
}

// tableRevisionHeader is the value of HeaderTableRevision.
// tab is the request's table (its snapshot), so the header names the
// revision that served it.
func (n *Node) tableRevisionHeader(tab *table.Compiled) string {
	v := strconv.FormatUint(tab.Revision(), 10)
	if n.sync == nil {
		return v
	}
	if n.sync.Status().Stale {
		v += "; stale"
	}
	return v
}

// patchTable installs a table that differs from the last one only in
// routes, keys or tenants' budget state (tablesync's leaf deltas): the
// gateway patches what changed, and placements, links and the engine,
// which such a change cannot move, are left alone. Models of the edge's
// own config make the effective table another shape: those edges take
// the whole path.
func (n *Node) patchTable(t *table.Table, ch table.Change) error {
	if len(n.cfg.Local.Models) > 0 {
		return n.applyTable(t)
	}
	c := n.cfg
	c.Table = *t
	eff := c.EffectiveTable()
	if err := n.gw.PatchTable(&eff, ch); err != nil {
		return err
	}
	if n.gossip != nil {
		n.publishTable()
	}
	if n.authMode() == config.AuthKeys && !n.gw.Table().HasKeys() {
		n.warnNoKeys()
	}
	return nil
}

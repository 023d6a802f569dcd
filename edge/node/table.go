package node

import (
	"context"
	"strconv"

	"github.com/meridian-mesh/meridian/shared/tablewire"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-mesh/meridian/edge/config"
	"github.com/meridian-mesh/meridian/edge/tablesync"
	"github.com/meridian-mesh/meridian/shared/table"
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
	keys, err := tablesync.ParsePublicKeys(c.Keys())
	if err != nil {
		return err
	}
	sc := tablesync.DefaultConfig()
	sc.TableKeys, sc.ClusterID = keys, c.ClusterID
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
	sc.Apply = n.applyTable
	sc.ReadyModels = n.readyModels
	sc.Logger = n.log
	sc.Registerer = registerer{n.metrics.Register}
	if n.sync, err = tablesync.New(sc); err != nil {
		return err
	}
	tab := n.cfg.Table // applyTable adds the local engine
	return n.sync.Seed(&tab)
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

// TableStatus returns the edge's view of its routing table.
func (n *Node) TableStatus() tablesync.Status {
	if n.sync == nil {
		return tablesync.Status{Revision: n.gw.Table().Revision(), Source: tablesync.SourceConfig}
	}
	return n.sync.Status()
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

// registerer adapts the node's registry to prometheus.Registerer.
type registerer struct{ register func(...prometheus.Collector) }

func (r registerer) Register(c prometheus.Collector) error   { r.register(c); return nil }
func (r registerer) MustRegister(cs ...prometheus.Collector) { r.register(cs...) }
func (r registerer) Unregister(prometheus.Collector) bool    { return false }

// cacheRevision returns the revision of the table kept at path, 0 when
// none.
func cacheRevision(path string) uint64 { return tablesync.CachedRevision(path) }

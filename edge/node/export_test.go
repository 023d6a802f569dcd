package node

import "github.com/meridian-mesh/meridian/edge/tablesync"

// TableStatus returns the edge's view of its routing table.
func (n *Node) TableStatus() tablesync.Status {
	if n.sync == nil {
		return tablesync.Status{Revision: n.gw.Table().Revision(), Source: tablesync.SourceConfig}
	}
	return n.sync.Status()
}

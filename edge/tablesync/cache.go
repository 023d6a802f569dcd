package tablesync

import (
	tablev1 "github.com/meridian-mesh/meridian/proto/table/v1"
	"github.com/meridian-mesh/meridian/shared/tablewire"
)

// readCache loads and validates the table in the edge's cache file
// (tablewire.CacheEdgeTable, written by writeCache).
func readCache(path string, max int) (*tablev1.RoutingTable, error) {
	b, err := tablewire.ReadCache(path, tablewire.CacheEdgeTable, max)
	if err != nil {
		return nil, err
	}
	return tablewire.Decode(b, max)
}

// writeCache replaces the edge's cache file with the encoded table b,
// atomically.
func writeCache(path string, b []byte) error {
	return tablewire.WriteCache(path, tablewire.CacheEdgeTable, b)
}

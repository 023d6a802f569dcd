package api

import (
	"net/http"

	"github.com/meridian-mesh/meridian/control/fsm"
	"github.com/meridian-mesh/meridian/shared/tablewire"
)

// TableKey is GET /v1/control/table-key: what an edge pins in its
// config (control.table_public_key, control.cluster_id).
type TableKey struct {
	PublicKey string `json:"public_key"`
	ClusterID string `json:"cluster_id"`
	Epoch     uint64 `json:"epoch"`
}

func (s *Server) tableKey(w http.ResponseWriter, r *http.Request) {
	id := s.node.FSM().State().Identity()
	if id == nil {
		writeError(w, http.StatusServiceUnavailable, &fsm.Error{Code: CodeNoLeader,
			Message: "no table-signing key yet: the first leader creates it once elected"})
		return
	}
	s.setIndex(w)
	writeJSON(w, http.StatusOK, TableKey{PublicKey: tablewire.FormatPublicKey(id.GetPublicKey()), ClusterID: id.GetClusterId(), Epoch: id.GetEpoch()})
}

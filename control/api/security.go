package api

import (
	"net/http"

	"github.com/meridian-mesh/meridian/control/fsm"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
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

// checkSecretRefs refuses a write that points a provider's secret_ref
// outside the configured bounds (tablewire.SecretPolicy): 400 with the
// field named, on whichever node the write arrives at. The FSM checks
// only the ref's form, since the bounds are configuration and the FSM
// must not depend on it; the compiler checks them again before a table
// is published.
func (s *Server) checkSecretRefs(ops []*controlv1.Op) error {
	for _, op := range ops {
		p := op.GetProvider()
		if p == nil {
			continue
		}
		if err := s.cfg.Secrets.Check(p.GetSecretRef()); err != nil {
			return &fsm.Error{Code: fsm.CodeInvalid, Field: "secret_ref", Message: "provider " + p.GetId() + ": " + err.Error()}
		}
	}
	return nil
}

// readOrOpen requires a read token unless OpenEndpoints.
func (s *Server) readOrOpen(h http.HandlerFunc) http.Handler {
	if s.cfg.OpenEndpoints {
		return h
	}
	return s.auth(roleRead, h)
}

// Health is GET /v1/control/health, served without a token for load
// balancers and process supervisors: 200 while the node's replica
// applies, 503 with the reason once it has halted on a log entry it
// could not apply.
type Health struct {
	OK     bool   `json:"ok"`
	Halted string `json:"halted,omitempty"`
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	if err := s.node.Healthy(); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, Health{Halted: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, Health{OK: true})
}

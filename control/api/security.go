package api

import (
	"errors"
	"net/http"

	"github.com/meridian-mesh/meridian/control/cluster"
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
	// NextPublicKey is a staged key (POST /v1/control/table-key/stage):
	// pin it on every edge beside the current one, then promote it.
	NextPublicKey string `json:"next_public_key,omitempty"`
}

func tableKeyOf(id *controlv1.ClusterIdentity) TableKey {
	k := TableKey{PublicKey: tablewire.FormatPublicKey(id.GetPublicKey()), ClusterID: id.GetClusterId(), Epoch: id.GetEpoch()}
	if id.GetNextPublicKey() != nil {
		k.NextPublicKey = tablewire.FormatPublicKey(id.GetNextPublicKey())
	}
	return k
}

// rotateTableKey is POST /v1/control/table-key/{step}, step "stage" or
// "promote", on the leader.
func (s *Server) rotateTableKey(w http.ResponseWriter, r *http.Request) {
	step := r.PathValue("step")
	if step != "stage" && step != "promote" {
		writeError(w, http.StatusNotFound, &fsm.Error{Code: fsm.CodeNotFound, Field: "step", Message: `must be "stage" or "promote"`})
		return
	}
	s.onLeader(w, r, nil, func() error {
		var id *controlv1.ClusterIdentity
		var err error
		if step == "stage" {
			id, err = s.node.StageTableKey()
		} else {
			id, err = s.node.PromoteTableKey()
		}
		switch {
		case errors.Is(err, cluster.ErrNoIdentity), errors.Is(err, cluster.ErrNoNextKey):
			writeError(w, http.StatusConflict, &fsm.Error{Code: fsm.CodeConflict, Message: err.Error()})
			return nil
		case err != nil:
			return err
		}
		writeJSON(w, http.StatusOK, tableKeyOf(id))
		return nil
	})
}

func (s *Server) tableKey(w http.ResponseWriter, r *http.Request) {
	id := s.node.FSM().State().Identity()
	if id == nil {
		writeError(w, http.StatusServiceUnavailable, &fsm.Error{Code: CodeNoLeader,
			Message: "no table-signing key yet: the first leader creates it once elected"})
		return
	}
	s.setIndex(w)
	writeJSON(w, http.StatusOK, tableKeyOf(id))
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
